"""Module hooks that live for one block and see only the calls of the thread that opened it.

Hooks belong to a module, not to a thread: a widget computing in the background and a cell running the same model
meanwhile would each see the other's forward passes. Every per-call hook in livexai goes through here, so each
registers inside ``try``, is removed in ``finally``, and ignores other threads' calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn


@contextmanager
def forward_hook(module: nn.Module, hook: Callable[[nn.Module, Any, Any], Any]) -> Iterator[None]:
    """``hook(module, inputs, output)`` after each call of ``module`` from this thread while the block runs; what
    it returns replaces the output, as with ``register_forward_hook``."""
    owner = threading.get_ident()

    def scoped(called: nn.Module, inputs: Any, output: Any) -> Any:
        return hook(called, inputs, output) if threading.get_ident() == owner else None

    handle = module.register_forward_hook(scoped)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def pre_hook(module: nn.Module, hook: Callable[..., Any], *, with_kwargs: bool = False) -> Iterator[None]:
    """``hook(module, args)`` (or ``hook(module, args, kwargs)`` ``with_kwargs``) before each call of ``module``
    from this thread while the block runs; what it returns replaces the arguments, as with
    ``register_forward_pre_hook``."""
    owner = threading.get_ident()

    def scoped(called: nn.Module, *arguments: Any) -> Any:
        return hook(called, *arguments) if threading.get_ident() == owner else None

    handle = module.register_forward_pre_hook(scoped, with_kwargs=with_kwargs)
    try:
        yield
    finally:
        handle.remove()
