"""Sentences to token ids and back with a plain word list (index = id), or a Hugging Face tokenizer.

Only the text widget and notebooks need this: the methods themselves take ids. A word list's tokenisation is
lower-case words and single punctuation marks, the way :func:`livexai.datasets.reviews` writes its reviews;
words the list does not know become its unknown token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

_WORDS = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")
UNKNOWN_TOKENS: tuple[str, ...] = ("<unk>", "[UNK]", "<UNK>", "<oov>")


def words(text: str) -> list[str]:
    """``text`` as lower-case words and punctuation marks: ``"Not good!"`` -> ``["not", "good", "!"]``."""
    return _WORDS.findall(text.lower())


def encode(text: str, vocab: Sequence[str]) -> torch.Tensor:
    """Token ids ``(T,)`` of ``text`` under ``vocab``; unknown words take the list's unknown token."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    index = {word: i for i, word in enumerate(vocab)}
    unknown = next((index[token] for token in UNKNOWN_TOKENS if token in index), None)
    ids = []
    for word in words(text):
        if word in index:
            ids.append(index[word])
        elif unknown is not None:
            ids.append(unknown)
        else:
            raise ValueError(f"the word {word!r} is not in the vocabulary, which has no unknown token")
    if not ids:
        raise ValueError("the text has no words to explain")
    return torch.tensor(ids, dtype=torch.long)


def tokenize(text: str, tokenizer: Any) -> tuple[dict[str, torch.Tensor], list[int | None]]:
    """A Hugging Face tokenizer's ``input_ids`` and ``attention_mask`` ``(1, T)`` for ``text``, and each token's
    word (``word_ids()``; None for special tokens), so a word of several sub-tokens is one feature."""
    encoded = tokenizer(text, return_tensors="pt")
    if not isinstance(encoded, Mapping) or "input_ids" not in encoded:
        raise TypeError("tokenizer(text, return_tensors='pt') must return a mapping with 'input_ids'")
    word_ids = encoded.word_ids() if callable(getattr(encoded, "word_ids", None)) else None
    ids = encoded["input_ids"]
    groups = list(word_ids) if word_ids is not None else list(range(ids.shape[-1]))
    inputs = {"input_ids": ids}
    if "attention_mask" in encoded:
        inputs["attention_mask"] = encoded["attention_mask"]
    return inputs, groups


def token_strings(ids: torch.Tensor, vocab: Sequence[str] | None = None, tokenizer: Any = None) -> list[str]:
    """Display strings of ids ``(T,)``: the vocab's words, the tokenizer's tokens, or the ids as text."""
    values = [int(i) for i in ids.reshape(-1).tolist()]
    if tokenizer is not None and callable(getattr(tokenizer, "convert_ids_to_tokens", None)):
        return [str(token) for token in tokenizer.convert_ids_to_tokens(values)]
    if vocab is not None:
        return [str(vocab[i]) if 0 <= i < len(vocab) else f"#{i}" for i in values]
    return [f"#{i}" for i in values]
