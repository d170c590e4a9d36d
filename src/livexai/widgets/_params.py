"""Widget parameters, each declared once: one trait carries the value, its validation and its control.

A widget declares ``n_segments = IntParam(50, "superpixels", low=2, high=5000, ui=(4, 200, 1))`` and nothing
else: the trait syncs with the browser as a JSON number or string (its wire format), refuses a bad value from
Python or the browser with a readable message, and describes the slider or menu the front end draws
(``controls``, read by ``controlsSection`` in ``js/widget.js``). Bounds and choices that depend on the widget
(the layers of its model, the size of its background set) are callables of the widget.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import traitlets
from typing_extensions import NotRequired

from .._adapter import OUTPUT_SPACES
from .._inputs import check_choice, check_float, check_int

# Declaration order, which is the order controls are drawn in (traitlets itself lists traits by name).
_declared = itertools.count()

Bound = float | Callable[[Any], float] | None
Choices = Sequence[str] | Callable[[Any], Sequence[str]]
Shown = Callable[[Any], bool] | None


class Control(TypedDict):
    """One control for the front end (``Control`` typedef in ``js/widget.js``)."""

    name: str
    kind: str  # "int", "float" or "choice"
    label: str
    choices: NotRequired[list[str]]
    min: NotRequired[float]
    max: NotRequired[float]
    step: NotRequired[float]


def _resolve(value: Any, widget: Any) -> Any:
    return value(widget) if callable(value) else value


class Param(traitlets.TraitType):
    """Base of the parameter traits: synced, validated by :meth:`check`, described by :meth:`control`.

    ``label`` names the control; ``shown`` (a callable of the widget) hides it when False, and ``drawn=False``
    never draws it (a value the view sets itself, such as the Explorer's selected image or the clicked class).
    """

    kind = ""

    def __init__(self, default: Any, label: str, *, shown: Shown = None, drawn: bool = True, **kwargs: Any):
        super().__init__(default, **kwargs)
        self.label, self.shown, self.drawn = label, shown, drawn
        self.order = next(_declared)
        self.tag(sync=True, param=True)

    def check(self, widget: Any, value: Any) -> Any:
        """The accepted value; ``TypeError``/``ValueError`` with a message that says what was expected."""
        raise NotImplementedError

    def validate(self, obj: Any, value: Any) -> Any:
        try:
            return self.check(obj, value)
        except (TypeError, ValueError) as error:
            raise traitlets.TraitError(str(error)) from error

    def visible(self, widget: Any) -> bool:
        """Whether the front end draws this parameter's control now."""
        return self.drawn and (self.shown is None or bool(self.shown(widget)))

    def control(self, widget: Any) -> Control:
        return {"name": self.name, "kind": self.kind, "label": self.label}


class _NumberParam(Param):
    """A number in ``[low, high]``; ``ui=(min, max, step)`` sets the slider, which may be narrower."""

    default_step: float = 1

    def __init__(
        self,
        default: Any,
        label: str,
        *,
        low: float,
        high: Bound = None,
        ui: tuple[Bound, Bound, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(default, label, **kwargs)
        self.low, self.high, self.ui = low, high, ui

    def control(self, widget: Any) -> Control:
        low, high, step = self.ui if self.ui is not None else (self.low, self.high, self.default_step)
        return {
            **super().control(widget),
            "min": _resolve(low, widget),
            "max": _resolve(high, widget),
            "step": step,
        }


class IntParam(_NumberParam):
    """An integer parameter (a slider)."""

    kind = "int"

    def check(self, widget: Any, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():  # JSON from the browser may carry 5.0
            value = int(value)
        high = _resolve(self.high, widget)
        return check_int(self.name, value, int(self.low), None if high is None else int(high))


class FloatParam(_NumberParam):
    """A float parameter (a slider); ``open_low`` excludes ``low`` itself."""

    kind = "float"
    default_step = 0.01

    def __init__(self, default: float, label: str, *, open_low: bool = False, **kwargs: Any) -> None:
        super().__init__(default, label, **kwargs)
        self.open_low = open_low

    def check(self, widget: Any, value: Any) -> float:
        return check_float(
            self.name, value, float(self.low), _resolve(self.high, widget), open_low=self.open_low
        )


class ChoiceParam(Param):
    """One of a list of names (a menu)."""

    kind = "choice"

    def __init__(self, default: str, label: str, *, choices: Choices, **kwargs: Any) -> None:
        super().__init__(default, label, **kwargs)
        self.choices = choices

    def options(self, widget: Any) -> tuple[str, ...]:
        return tuple(_resolve(self.choices, widget))

    def check(self, widget: Any, value: Any) -> str:
        return check_choice(self.name, value, self.options(widget))

    def control(self, widget: Any) -> Control:
        return {**super().control(widget), "choices": list(self.options(widget))}


@dataclass(frozen=True)
class Fixed:
    """A setting fixed when a widget is made (its seed, its output space): a keyword argument, not a control.

    Widgets list theirs in ``FIXED``; the value is checked at construction and handed to the core unchanged.
    """

    default: Any
    check: Callable[[str, Any], Any]


SEED = Fixed(0, lambda name, value: check_int(name, value, 0))
OUTPUT = Fixed("logits", lambda name, value: check_choice(name, value, OUTPUT_SPACES))


def positive_int(default: int) -> Fixed:
    """A fixed count such as a chunk size or a number of samples."""
    return Fixed(default, lambda name, value: check_int(name, value, 1))


def params_of(widget_class: type[traitlets.HasTraits]) -> list[Param]:
    """A widget class's parameter traits in declaration order."""
    found = [trait for trait in widget_class.class_traits().values() if isinstance(trait, Param)]
    return sorted(found, key=lambda trait: trait.order)
