"""Model adapter: the one place that runs the user's model.

It finds the model's device and dtype, evaluates perturbed inputs in batches of a size it tunes itself, maps
outputs to the space being explained (logits or probabilities), and leaves the model exactly as it found it:
training flags restored, no hooks, no parameter or ``requires_grad`` change, no ``.grad`` written.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

OutputSpace = Literal["logits", "probs"]
OUTPUT_SPACES: tuple[str, ...] = ("logits", "probs")

# CPU batch sizes tried, in order, on the first large call for a given model and input shape. The fastest
# per-sample size is remembered: on a 2-core CPU batch 10 beat batch 100 (see shared/recipes/peers.md).
_CPU_CANDIDATES = (8, 16, 32, 64, 128)
_CPU_DEFAULT = 32
# First batch size on an accelerator, by purpose: gradient passes keep activations for the backward pass.
_ACCELERATOR_START = {"forward": 512, "gradient": 256}

# Tuned batch sizes, per model, per (input shape without batch, device). Weak keys: forgetting a model frees it.
_tuned: weakref.WeakKeyDictionary[object, dict[tuple, int]] = weakref.WeakKeyDictionary()


class Cancelled(Exception):
    """Raised by a cancellation check to abandon a computation between batches."""


@contextmanager
def eval_mode(model: object) -> Iterator[None]:
    """Switch every submodule of ``model`` to eval mode, and restore each one's own flag afterwards.

    Flags are restored per module (not with ``model.train()``) so a model that was partly in eval mode, a common
    fine-tuning set-up with frozen batch norm, comes back exactly as it was.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def _identity(x: torch.Tensor) -> tuple:
    """What makes two tensors the same input: memory, layout, dtype, device and the in-place version counter."""
    # Tensors made under torch.inference_mode have no version counter: a fresh object never matches, so they are
    # simply not cached (they could be changed in place unseen).
    version = object() if x.is_inference() else x._version
    return (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype, x.device, version)


def _first_tensor(model: object) -> torch.Tensor | None:
    if not isinstance(model, nn.Module):
        return None
    for tensor in model.parameters():
        return tensor
    for tensor in model.buffers():
        return tensor
    return None


class ModelAdapter:
    """Runs ``model`` on batches of inputs, on its own device, in the chosen output space.

    ``model`` is an ``nn.Module`` or any callable mapping a batch ``(N, ...)`` to scores ``(N, K)``.
    ``device`` defaults to the device of the model's first parameter (CPU for plain callables).
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        *,
        output: OutputSpace = "logits",
        device: torch.device | str | None = None,
    ) -> None:
        if not callable(model):
            raise TypeError(
                f"model must be a torch.nn.Module or a callable mapping a batch to scores, got {type(model).__name__}"
            )
        if output not in OUTPUT_SPACES:
            raise ValueError(f"output must be one of {OUTPUT_SPACES}, got {output!r}")
        self.model = model
        self.output: OutputSpace = output
        anchor = _first_tensor(model)
        self.device = (
            torch.device(device)
            if device is not None
            else (anchor.device if anchor is not None else torch.device("cpu"))
        )
        self.dtype = anchor.dtype if anchor is not None and anchor.is_floating_point() else torch.float32
        self.n_evals = 0
        self.n_calls = 0
        self._batch_sizes: dict[tuple, int] = {}
        # (source tensor kept alive, its identity key, model-ready copy, scores): f(x) is computed once per input.
        self._cached: tuple[torch.Tensor, tuple, torch.Tensor, torch.Tensor | None] | None = None

    # -- inputs and outputs -------------------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` on the model's device and floating dtype (a copy only when a move is needed).

        The same unmodified input (same memory, shape and version) gives back the same prepared tensor, so a
        widget that recomputes on one input moves it once and runs f(x) once.
        """
        key = _identity(x)
        if self._cached is not None and self._cached[1] == key:
            return self._cached[2]
        prepared = x.detach().to(device=self.device, dtype=self.dtype)
        self._cached = (x, key, prepared, None)
        return prepared

    def _to_output_space(self, raw: object, n: int) -> torch.Tensor:
        if not isinstance(raw, torch.Tensor):
            raise TypeError(
                f"the model returned {type(raw).__name__}; expected a tensor of scores with shape (N, n_outputs). "
                "Wrap a model that returns a tuple or dict so that it returns the logits tensor."
            )
        if raw.ndim != 2 or raw.shape[0] != n:
            raise ValueError(
                f"the model returned shape {tuple(raw.shape)} for a batch of {n}; expected (N, n_outputs) = ({n}, K)"
            )
        return torch.softmax(raw, dim=1) if self.output == "probs" else raw

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """One forward pass in the output space, with autograd left to the caller (used by gradient methods)."""
        self.n_calls += 1
        self.n_evals += batch.shape[0]
        return self._to_output_space(self.model(batch), batch.shape[0])

    @contextmanager
    def session(self) -> Iterator[None]:
        """Eval mode for the duration of a computation, previous flags restored afterwards."""
        with eval_mode(self.model):
            yield

    def scores(
        self, x: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Scores ``(1, K)`` for a single prepared input ``x`` ``(1, ...)``; cached for the same unmodified tensor.

        ``compute(x)`` replaces the plain no-grad forward when the scores are not cached: a gradient method passes
        its own hooked forward with autograd, so f(x) and the gradients come from one pass, not two.
        """
        cached = self._cached
        if (
            cached is not None
            and cached[2] is x
            and cached[3] is not None
            and cached[1] == _identity(cached[0])
        ):
            return cached[3]
        if compute is None:
            with self.session(), torch.inference_mode():
                result = self.forward(x)
        else:
            result = compute(x).detach()
        if cached is not None and cached[2] is x:
            self._cached = (*cached[:3], result)
        return result

    # -- batched evaluation -------------------------------------------------------------------------------
    def evaluate(
        self,
        n: int,
        make_batch: Callable[[int, int], torch.Tensor],
        *,
        input_shape: tuple[int, ...],
        check_cancel: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """Scores ``(n, K)`` of ``n`` inputs of shape ``input_shape`` built lazily by ``make_batch(start, stop)``.

        No autograd, eval mode; batching as in :meth:`run_batched`.
        """
        outputs: list[torch.Tensor] = []
        with self.session(), torch.inference_mode():
            self.run_batched(
                n,
                lambda start, stop: outputs.append(self.forward(make_batch(start, stop))),
                input_shape=input_shape,
                check_cancel=check_cancel,
            )
        if not outputs:
            raise ValueError("nothing to evaluate: n must be at least 1")
        return torch.cat(outputs)

    def run_batched(
        self,
        n: int,
        step: Callable[[int, int], object],
        *,
        input_shape: tuple[int, ...],
        purpose: str = "forward",
        batch_size: int | None = None,
        check_cancel: Callable[[], None] | None = None,
    ) -> None:
        """Call ``step(start, stop)`` over ``0..n`` in batches whose size this adapter chooses.

        Work is done one batch at a time so memory stays bounded whatever ``n`` is. The size is tuned per model,
        ``purpose`` (gradient passes keep activations, so they fit fewer inputs than plain forwards) and input
        shape, and remembered: on an accelerator it starts large and halves on out-of-memory (the failed batch is
        retried); on a CPU the first large call times a few sizes on its real work (after one warm-up batch) and
        keeps the fastest. ``batch_size`` fixes the starting size. ``check_cancel`` is called between batches and
        may raise :class:`Cancelled`.
        """
        key = (purpose, tuple(input_shape), str(self.device))
        size = batch_size if batch_size is not None else self._known_batch_size(key)
        trials = [] if size is not None else self._trial_sizes(n)
        if size is None and not trials:
            size = min(n, _CPU_DEFAULT) if self.device.type == "cpu" else _ACCELERATOR_START.get(purpose, 256)
        warming_up = bool(trials)
        timings: dict[int, float] = {}
        start = 0
        while start < n:
            if check_cancel is not None:
                check_cancel()
            current = trials[0] if trials else size
            stop = min(n, start + current)
            began = time.perf_counter()
            try:
                step(start, stop)
            except torch.cuda.OutOfMemoryError:
                if stop - start == 1:
                    raise
                size, trials = (stop - start) // 2, []
                self._remember(key, size)
                logger.info("out of memory at batch size %d; retrying with %d", stop - start, size)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            if trials and not warming_up:
                timings[current] = (time.perf_counter() - began) / (stop - start)
                trials.pop(0)
                if not trials:
                    size = min(timings, key=timings.__getitem__)
                    self._remember(key, size)
            warming_up = False
            start = stop

    def _trial_sizes(self, n: int) -> list[int]:
        """Sizes to time on this call: only on a CPU, and only when the call is large enough to afford them."""
        if self.device.type != "cpu":
            return []
        candidates = list(_CPU_CANDIDATES)
        # Trials (plus the warm-up batch) take at most half of the work, so the rest runs at the chosen size.
        while candidates and candidates[0] + sum(candidates) > n // 2:
            candidates.pop()
        return candidates if len(candidates) >= 3 else []

    def _known_batch_size(self, key: tuple) -> int | None:
        if key in self._batch_sizes:
            return self._batch_sizes[key]
        try:
            return _tuned.get(self.model, {}).get(key)
        except TypeError:  # a callable that cannot be weakly referenced
            return None

    def _remember(self, key: tuple, size: int) -> None:
        self._batch_sizes[key] = size
        with suppress(TypeError):
            _tuned.setdefault(self.model, {})[key] = size
