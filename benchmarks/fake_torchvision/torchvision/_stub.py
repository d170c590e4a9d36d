"""The one helper of the stand-in: a function that says it is not the real torchvision."""

from collections.abc import Callable
from typing import Any


def missing(name: str) -> Callable[..., Any]:
    def stub(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"torchvision.{name} is a benchmark stand-in; install the real torchvision")

    stub.__name__ = name.rsplit(".", 1)[-1]
    return stub
