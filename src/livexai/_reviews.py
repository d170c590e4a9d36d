"""The grammar behind :func:`livexai.datasets.reviews`: short product reviews whose label-deciding words are known.

A review is one or two sentiment clauses that agree with its label plus one to three neutral clauses, in random
order, joined by ``.``, ``,`` or ``and`` and ended by ``.``. A sentiment clause is either

- ``[the <subject> | it] <is|was> [not] [<intensifier>] <adjective>``  ("the battery is not very good"), or
- ``i [never] [<intensifier>] <verb> the <subject>``  ("i never really liked the screen").

The negation flips the word's polarity ("not bad" is positive), so a model has to read it. Only the sentiment
word, its negation and its intensifier are rationale tokens; neutral clauses use none of those words.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple, TypeVar

__all__ = ["DRAWS_PER_REVIEW", "MAX_TOKENS", "VOCAB", "Review", "sample_review"]

_T = TypeVar("_T")

_SUBJECTS = (
    "screen",
    "battery",
    "price",
    "sound",
    "camera",
    "keyboard",
    "design",
    "case",
    "charger",
    "speaker",
    "app",
    "quality",
)
_COPULAS = ("is", "was")
# (negative words, positive words): index 1 is positive, matching REVIEW_CLASSES = ["negative", "positive"]
_ADJECTIVES = (
    ("bad", "awful", "poor", "terrible", "horrible", "disappointing", "useless", "weak"),
    ("good", "great", "excellent", "nice", "perfect", "fantastic", "wonderful", "amazing"),
)
_VERBS = (("hated", "disliked", "regretted"), ("liked", "loved", "enjoyed"))
_ADJECTIVE_INTENSIFIERS = ("very", "really", "so", "quite", "extremely")
_VERB_INTENSIFIERS = ("really", "truly")
_ADJECTIVE_NEGATION, _VERB_NEGATION = "not", "never"
_CONNECTORS = (".", ",", "and")

_SLOTS: dict[str, tuple[str, ...]] = {
    "{part}": ("case", "charger", "keyboard", "speaker", "camera"),  # things that have a colour
    "{copula}": _COPULAS,
    "{colour}": ("black", "white", "red", "blue", "grey", "silver"),
    "{day}": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    "{person}": ("son", "daughter", "wife", "husband", "mother", "father", "friend"),
    "{time}": ("day", "morning", "evening", "weekend"),
    "{place}": ("home", "work", "school"),
    "{period}": ("week", "month", "year"),
}
_NEUTRAL = (
    "it came in a {colour} box",
    "the box arrived on {day}",
    "it was delivered on {day}",
    "i bought it for my {person}",
    "i use it every {time}",
    "my {person} uses it at {place}",
    "i ordered it last {period}",
    "the {part} {copula} {colour}",
)

_NEGATION_RATE = 0.3  # share of sentiment clauses with a negation: common enough that a model must learn it
_INTENSIFIER_RATE = 0.4
_SENTIMENT_CLAUSES = (1, 2)
_NEUTRAL_CLAUSES = (1, 2, 3)

_LONGEST_CLAUSE = (
    6  # "the keyboard is not very good", "i never really liked the screen", "it came in a red box"
)
MAX_TOKENS = (_SENTIMENT_CLAUSES[-1] + _NEUTRAL_CLAUSES[-1]) * (
    _LONGEST_CLAUSE + 1
)  # each clause + its connector
DRAWS_PER_REVIEW = 64  # uniforms reserved per review (about 40 are used at most), so reviews are independent


def _vocabulary() -> tuple[str, ...]:
    """``<pad>``, ``<unk>``, then every word and punctuation mark the grammar can produce, in a fixed order."""
    words = [
        *(w for template in _NEUTRAL for w in template.split() if w not in _SLOTS),
        *(w for options in _SLOTS.values() for w in options),
        *_SUBJECTS,
        "the",
        "it",
        "i",
        _ADJECTIVE_NEGATION,
        _VERB_NEGATION,
        *_ADJECTIVE_INTENSIFIERS,
        *_VERB_INTENSIFIERS,
        *(w for pair in (_ADJECTIVES, _VERBS) for words in pair for w in words),
        *_CONNECTORS,
    ]
    return ("<pad>", "<unk>", *dict.fromkeys(words))


VOCAB: tuple[str, ...] = _vocabulary()


class Review(NamedTuple):
    """One review: its tokens, a rationale flag per token, and its label (0 negative, 1 positive)."""

    tokens: list[str]
    rationale: list[bool]
    label: int


class _Draws:
    """Random choices read from a fixed row of uniforms in [0, 1)."""

    def __init__(self, uniforms: Sequence[float]) -> None:
        self._next: Iterator[float] = iter(uniforms)

    def chance(self, p: float) -> bool:
        return next(self._next) < p

    def pick(self, options: Sequence[_T]) -> _T:
        return options[int(next(self._next) * len(options))]

    def shuffled(self, items: list[_T]) -> list[_T]:
        """A Fisher-Yates shuffle of a copy of ``items``."""
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = self.pick(range(i + 1))
            out[i], out[j] = out[j], out[i]
        return out


def _sentiment_clause(label: int, draw: _Draws) -> list[tuple[str, bool]]:
    """A clause whose meaning is ``label``; rationale tokens are the sentiment word, negation and intensifier."""
    negated = draw.chance(_NEGATION_RATE)
    intensified = draw.chance(_INTENSIFIER_RATE)
    polarity = label ^ negated  # "not bad" is positive: the word's own polarity is the label flipped
    if draw.chance(0.5):
        subject = [("it", False)] if draw.chance(0.25) else [("the", False), (draw.pick(_SUBJECTS), False)]
        head = [*subject, (draw.pick(_COPULAS), False)]
        negation, intensifiers, words, tail = _ADJECTIVE_NEGATION, _ADJECTIVE_INTENSIFIERS, _ADJECTIVES, []
    else:
        head = [("i", False)]
        negation, intensifiers, words = _VERB_NEGATION, _VERB_INTENSIFIERS, _VERBS
        tail = [("the", False), (draw.pick(_SUBJECTS), False)]
    middle = [(negation, True)] if negated else []
    if intensified:
        middle.append((draw.pick(intensifiers), True))
    return [*head, *middle, (draw.pick(words[polarity]), True), *tail]


def _neutral_clause(draw: _Draws) -> list[tuple[str, bool]]:
    """A clause with no sentiment word, negation or intensifier."""
    return [(draw.pick(_SLOTS[w]) if w in _SLOTS else w, False) for w in draw.pick(_NEUTRAL).split()]


def sample_review(uniforms: Sequence[float]) -> Review:
    """One review drawn from ``uniforms`` (at least :data:`DRAWS_PER_REVIEW` numbers in [0, 1))."""
    draw = _Draws(uniforms)
    label = int(draw.chance(0.5))
    clauses = [_sentiment_clause(label, draw) for _ in range(draw.pick(_SENTIMENT_CLAUSES))]
    clauses += [_neutral_clause(draw) for _ in range(draw.pick(_NEUTRAL_CLAUSES))]
    pairs: list[tuple[str, bool]] = []
    for i, clause in enumerate(draw.shuffled(clauses)):
        if i:
            pairs.append((draw.pick(_CONNECTORS), False))
        pairs += clause
    pairs.append((".", False))
    tokens, rationale = (list(t) for t in zip(*pairs, strict=True))
    return Review(tokens, rationale, label)
