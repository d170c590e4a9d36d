"""Model adapter: the one place that runs the user's model.

It finds the model's device and dtype, evaluates perturbed inputs in batches of a size it tunes itself, maps
outputs to the space being explained (logits or probabilities), and leaves the model exactly as it found it:
training flags restored, no hooks, no parameter or ``requires_grad`` change, no ``.grad`` written.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from typing import Any, Literal

import torch
from torch import nn

from ._inputs import tensor_identity
from ._tokens import TokenCall

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

OutputSpace = Literal["logits", "probs"]
OUTPUT_SPACES: tuple[str, ...] = ("logits", "probs")

# CPU batch sizes tried, in order, on the first large call for a given model and input shape. The fastest
# per-sample size is remembered: on a 2-core CPU batch 10 beat batch 100 (see benchmarks/RESULTS.md).
_CPU_CANDIDATES = (8, 16, 32, 64, 128)
# Passes that keep activations for a backward pass stop at 32: their trial batches of 64 and 128 ran a
# ResNet-18's DeepSHAP at 117 ms per reference, 1.75 times its 67 ms at 16, and the trials run on real work.
_CPU_CANDIDATES_WITH_GRADIENTS = (8, 16, 32)
_CPU_DEFAULT = 32
# Channels-last is kept only if it is at least this much faster (a smaller gain may be timing noise; picking
# the slower layout then costs little). At 0.9, ResNet-18's probe (0.88 at batch 8 on a 2-core CPU, 0.84 at 16
# and 32) fell on either side from run to run, and a contiguous run took 1.2 times the floor.
_LAYOUT_GAIN = 0.95
# A trial size this much slower per input than the best so far ends the search for larger sizes.
_SLOWER_STOPS_TRIALS = 1.25
# Timed rounds over the candidate sizes, after one untimed round; each size's fastest batch counts.
_TIMED_ROUNDS = 2
# Calls smaller than this run at the default size without starting the timing trials.
_MIN_TUNING_CALL = 64
# Image calls from this size on choose the memory layout first (a probe of 4 passes of 8 images): a 50-step
# deletion curve ran 1.3x the floor in the contiguous layout on a CPU where channels-last is faster.
_MIN_LAYOUT_CALL = 32
_CONTIGUOUS = torch.contiguous_format
# A batch plan: how many inputs per forward pass, and their memory layout.
Plan = tuple[int, torch.memory_format]
# The layout probe's sample of 8 images is repeated this often on a GPU.
_GPU_PROBE_REPEAT = 8
# First batch size on an accelerator, by purpose: gradient passes keep activations for the backward pass.
_ACCELERATOR_START = {"forward": 512, "gradient": 256}

# Reduced precisions the adapter can run forward passes in.
_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)

# Tuned batch plans and trials in progress, per model, per (purpose, input shape without batch, device,
# autocast dtype).
# Weak keys: forgetting a model frees it.
_tuned: weakref.WeakKeyDictionary[object, dict[tuple, Any]] = weakref.WeakKeyDictionary()
# Guards the registries shared by all models (``_tuned``, ``_locks``); each model's own state has its lock.
_registry_guard = threading.Lock()


class Cancelled(Exception):
    """Raised by a cancellation check to abandon a computation between batches."""


def switch_to_eval(model: object) -> list[tuple[nn.Module, bool]]:
    """Put every submodule of ``model`` in eval mode; return the flags to give back to :func:`restore_modes`.

    Flags are kept per module (not restored with ``model.train()``) so a model that was partly in eval mode, a
    common fine-tuning set-up with frozen batch norm, comes back exactly as it was. A model already wholly in
    eval mode, the usual case, is left untouched (and the call is fast).
    """
    if not isinstance(model, nn.Module) or not _any_training(model):
        return []
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    return flags


def _any_training(model: nn.Module) -> bool:
    """Whether any submodule is in training mode: a plain walk, stopping at the first (this runs on every
    call, and ``modules()`` builds a name for each module along the way)."""
    pending, seen = [model], {id(model)}
    while pending:
        module = pending.pop()
        if module.training:
            return True
        for child in module._modules.values():
            if child is not None and id(child) not in seen:  # a shared (or, oddly, cyclic) child once
                seen.add(id(child))
                pending.append(child)
    return False


def restore_modes(flags: list[tuple[nn.Module, bool]]) -> None:
    """Give each module back the training flag :func:`switch_to_eval` recorded."""
    for module, flag in flags:
        if module.training != flag:
            module.training = flag


class ModelLock:
    """The one lock of a model: its holder runs the model, in eval mode, while every other thread waits.

    Eval mode belongs to the lock, not to a caller: the first entry of the holding thread switches the model to
    eval, its last exit restores each module's flag. Without this, one thread restoring training mode while
    another still computed let batch norm update its running statistics on the user's model.

    Re-entrant for the holding thread; granted first come, first served. Long computations call
    :meth:`let_others_run` between batches, so a cell's call made while a widget computes waits for one batch,
    not for the widget's whole job.
    """

    def __init__(self) -> None:
        self._state = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._queue: deque[object] = deque()  # tickets of the threads waiting, in arrival order
        self._flags: list[tuple[nn.Module, bool]] = []

    def hold(self, model: object) -> _Hold:
        """Hold the lock, with ``model`` in eval mode, for the block (re-entrant)."""
        return _Hold(self, model)

    def let_others_run(self, model: object) -> None:
        """Hand the lock to the threads waiting for it, if any, and take it back after them.

        Only at the outermost level: an inner block (hooks registered, a backward pass pending) keeps it.
        """
        with self._state:
            if self._owner != threading.get_ident() or self._depth != 1 or not self._queue:
                return
        self._release()
        self._acquire(model)

    def _acquire(self, model: object) -> None:
        me = threading.get_ident()
        if self._owner == me:  # re-entry: only this thread sets or clears an owner equal to itself
            self._depth += 1
            return
        with self._state:
            ticket = object()
            self._queue.append(ticket)
            try:
                while self._owner is not None or self._queue[0] is not ticket:
                    self._state.wait()
            except BaseException:  # e.g. KeyboardInterrupt while waiting: give the turn to the next thread
                self._queue.remove(ticket)
                self._state.notify_all()
                raise
            self._queue.popleft()
            self._owner, self._depth = me, 1
        try:
            self._flags = switch_to_eval(model)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._depth > 1:  # an inner block: only the holder touches the depth while it holds the lock
            self._depth -= 1
            return
        with self._state:
            self._depth -= 1
            flags, self._flags = self._flags, []
        try:
            restore_modes(flags)
        finally:
            with self._state:
                self._owner = None
                self._state.notify_all()


class _Hold(AbstractContextManager[None]):
    """The block of :meth:`ModelLock.hold`: a plain context manager, as every call enters several of them."""

    __slots__ = ("_lock", "_model")

    def __init__(self, lock: ModelLock, model: object) -> None:
        self._lock, self._model = lock, model

    def __enter__(self) -> None:
        self._lock._acquire(self._model)

    def __exit__(self, *_: object) -> None:
        self._lock._release()


# One lock per model, shared by every adapter over it (weak keys: forgetting a model frees its lock).
_locks: weakref.WeakKeyDictionary[object, ModelLock] = weakref.WeakKeyDictionary()


def model_lock(model: object) -> ModelLock:
    """The lock of ``model`` (of the object a bound method belongs to): created once, then shared.

    A callable that cannot be weakly referenced gets a lock of its own, which only its own adapter uses.
    """
    owner = getattr(model, "__self__", model)
    with _registry_guard:
        try:
            lock = _locks.get(owner)
            if lock is None:
                lock = _locks[owner] = ModelLock()
        except TypeError:
            lock = ModelLock()
    return lock


def _first_tensor(model: object) -> torch.Tensor | None:
    if not isinstance(model, nn.Module):
        return None
    for tensor in model.parameters():
        return tensor
    for tensor in model.buffers():
        return tensor
    return None


class _Tuning:
    """Timing trials of batch sizes on a CPU, carried across calls (progressive methods evaluate in chunks).

    Candidate sizes run in rounds, smallest first: one untimed round, then :data:`_TIMED_ROUNDS` timed ones, and
    each size keeps its fastest time. The first batches of a new size, and of a new process, are slow for
    reasons that do not last (kernel set-up, and glibc returning large activation buffers to the system until
    its allocation threshold has grown): timing them made a good size look 1.5 to 2 times slower than it is.
    A size that runs clearly slower per input than a smaller one drops itself and all larger sizes from the
    later rounds (the time per input is U-shaped in the batch size, and a big model's large trial batches are
    expensive); :attr:`best` is set when the trials are done. Trials are real work: on a CPU a sample's scores
    do not depend on the batch size, so the results are the same as with any fixed size.
    """

    def __init__(self, layout: torch.memory_format, candidates: tuple[int, ...] = _CPU_CANDIDATES) -> None:
        self.pending: list[tuple[Plan, bool]] = [
            ((size, layout), round_ > 0) for round_ in range(1 + _TIMED_ROUNDS) for size in candidates
        ]
        self.seconds_per_input: dict[Plan, float] = {}
        self.best: Plan | None = None

    @property
    def next_plan(self) -> Plan:
        """The plan of the next trial batch (the best one once the trials are over)."""
        if self.pending:
            return self.pending[0][0]
        assert self.best is not None
        return self.best

    def record(self, seconds: float) -> None:
        """Note the time of a full batch run with :attr:`next_plan`."""
        if not self.pending:  # another thread finished the trials meanwhile
            return
        plan, timed = self.pending.pop(0)
        if timed:
            per_input = seconds / plan[0]
            self.seconds_per_input[plan] = min(self.seconds_per_input.get(plan, per_input), per_input)
            fastest = min(self.seconds_per_input, key=self.seconds_per_input.__getitem__)
            slower = self.seconds_per_input[plan] > _SLOWER_STOPS_TRIALS * self.seconds_per_input[fastest]
            if slower and fastest[0] < plan[0]:  # past the bottom of the U
                self.pending = [entry for entry in self.pending if entry[0][0] < plan[0]]
        if not any(timed for _, timed in self.pending):
            self.best = min(self.seconds_per_input, key=self.seconds_per_input.__getitem__)
            self.pending = []


def scores_of(raw: object) -> object:
    """The scores tensor inside a model's output: a Hugging Face ``ModelOutput`` or a dict with ``"logits"`` gives
    its logits; anything else is returned as it is (and checked by the caller)."""
    if isinstance(raw, torch.Tensor):
        return raw
    if isinstance(raw, dict) and isinstance(raw.get("logits"), torch.Tensor):
        return raw["logits"]
    logits = getattr(raw, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else raw


def check_finite(scores: torch.Tensor) -> None:
    """Refuse scores ``(N, K)`` with NaN or infinite values, saying how many inputs produced them.

    One check per evaluated chunk (a single synchronisation on a GPU): NaN scores would otherwise become NaN
    weights, an R² of nan and a blank map without a word.
    """
    if math.isfinite(float(scores.sum())):
        return  # NaN and inf reach the sum: one reduction in the usual case (an overflowing sum looks below)
    bad = ~torch.isfinite(scores).all(dim=1)
    if bool(bad.any()):
        count = int(bad.sum())
        raise ValueError(
            f"the model returned NaN or infinite scores for {count} of {scores.shape[0]} inputs; an explanation "
            "of such outputs means nothing. Check the model on perturbed inputs (blurred, zeroed or mean-filled "
            "regions), e.g. a log or division of values that can reach 0, or use another baseline. For token "
            "ids: a sequence with every token removed, where attention has no key left, gives NaN"
        )


def check_softmax_applies(raw: torch.Tensor) -> None:
    """Refuse ``output="probs"`` where a softmax would flatten the scores into meaningless ones.

    One output: its softmax is 1 for every input (every weight 0, R² nan). Rows already summing to 1 in
    ``[0, 1]``: the model returns probabilities, and their softmax squeezes them into a narrow band.
    """
    if raw.shape[1] == 1:
        raise ValueError(
            "output='probs' applies a softmax over the model's outputs, but it has one output (softmax of one "
            "score is always 1); use output='logits' to explain that score as it is"
        )
    values = raw.detach().float()
    if bool(((values >= 0) & (values <= 1)).all()) and bool(
        torch.allclose(values.sum(dim=1), torch.ones_like(values[:, 0]), atol=1e-4)
    ):
        raise ValueError(
            "output='probs' applies a softmax, but the model already returns probabilities (each row is in "
            "[0, 1] and sums to 1); use output='logits' to explain those probabilities as they are"
        )


# Modules whose output depends on the training flag (batch statistics, random drops).
_MODE_DEPENDENT = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)


def _behaves_as_in_training(module: nn.Module) -> bool:
    """Whether running ``module`` as it is would use batch statistics or drop activations."""
    return any(isinstance(part, _MODE_DEPENDENT) and part.training for part in module.modules())


def warn_if_training_inside(model: object) -> None:
    """Warn when a plain function calls an ``nn.Module`` that is in training mode.

    ``lambda b: hf(pixel_values=b).logits`` is the obvious wrapper, but livexai can only switch modules it is
    given to eval mode: inside the function, batch norm uses batch statistics and dropout drops, so the same
    seed gives different weights each run.
    """
    if not inspect.isfunction(model):
        return
    try:
        names = inspect.getclosurevars(model)
    except ValueError:  # a closure cell not filled yet
        return
    found = [*names.nonlocals.values(), *names.globals.values()]
    training = [
        module for module in found if isinstance(module, nn.Module) and _behaves_as_in_training(module)
    ]
    if training:
        warnings.warn(
            f"model is a function that calls a {type(training[0]).__name__} in training mode: batch norm and "
            "dropout will behave as in training and results will vary. Pass the module itself (livexai puts it in "
            "eval mode for the computation and restores it; Hugging Face outputs with .logits are understood), "
            "or call .eval() on it first",
            stacklevel=4,
        )


class ModelAdapter:
    """Runs ``model`` on batches of inputs, on its own device, in the chosen output space.

    ``model`` is an ``nn.Module`` or any callable mapping a batch ``(N, ...)`` to scores ``(N, K)``.
    ``device`` defaults to the device of the model's first parameter (CPU for plain callables).

    ``autocast`` (``torch.bfloat16`` or ``torch.float16``) runs the forward passes that need no gradient, f(x)
    and every perturbed input of LIME and KernelSHAP, under :func:`torch.autocast`; scores come back in the
    model's dtype. On a CPU with AMX or a GPU with tensor cores this makes perturbation methods several times
    faster, at the cost of about three significant digits in each score (``benchmarks/RESULTS.md`` reports the
    error it introduces). Gradient methods always run in full precision.

    Reproducibility: on a CPU the first calls on a model time batch sizes on their real work (about 750
    evaluations, carried across calls), and a sample's scores can differ in the last bits between batch sizes
    (matrix kernels treat batch tails differently). So a seed gives bit-identical results once the trials are
    done, and equal ones to float rounding before. ``batch_size`` fixes the batch size (contiguous layout, no
    timing at all) for results that are bit-identical in every call and every process.
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        *,
        output: OutputSpace = "logits",
        device: torch.device | str | None = None,
        batch_size: int | None = None,
        autocast: torch.dtype | None = None,
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
        if anchor is not None and anchor.device.type == "meta" and device is None:
            raise ValueError(
                "the model's parameters are on the meta device: they have shapes but no values (a model built "
                "with device='meta' or an empty-weights context). Load its weights first, e.g. "
                "model.to_empty(device='cpu') then model.load_state_dict(...)"
            )
        if not isinstance(model, nn.Module):
            warn_if_training_inside(model)
        self.device = (
            torch.device(device)
            if device is not None
            else (anchor.device if anchor is not None else torch.device("cpu"))
        )
        self.dtype = anchor.dtype if anchor is not None and anchor.is_floating_point() else torch.float32
        self.n_evals = 0
        self.n_calls = 0
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer or None (tuned), got {batch_size!r}")
        self.batch_size = batch_size
        if autocast is not None and autocast not in _AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be torch.bfloat16, torch.float16 or None, got {autocast!r}")
        self.autocast = autocast
        self._lock = model_lock(model)
        self._softmax_checked = False  # output="probs" is checked against the model's first output
        self._plans: dict[tuple, Any] = {}
        # How to call the model on token ids (set by each call on a sequence input; see livexai._tokens).
        self.tokens: TokenCall | None = None
        # (source tensor kept alive, its identity key, model-ready copy, scores): f(x) is computed once per input.
        self._cached: tuple[torch.Tensor, tuple, torch.Tensor, torch.Tensor | None] | None = None

    # -- inputs and outputs -------------------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` on the model's device and floating dtype (token ids stay integers), as a copy.

        The same unmodified input (same memory, shape and version) gives back the same prepared tensor, so a
        widget that recomputes on one input moves it once and runs f(x) once.
        """
        with self.session():
            key = tensor_identity(x)
            if self._cached is not None and self._cached[1] == key:
                return self._cached[2]
            # Always a copy: the model never gets the caller's memory, even a model that changes its input in place.
            dtype = torch.long if self.tokens is not None and not x.is_floating_point() else self.dtype
            prepared = x.detach().to(device=self.device, dtype=dtype, copy=True)
            self._cached = (x, key, prepared, None)
            return prepared

    def _to_output_space(self, raw: object, n: int) -> torch.Tensor:
        raw = scores_of(raw)
        if not isinstance(raw, torch.Tensor):
            raise TypeError(
                f"the model returned {type(raw).__name__}; expected a tensor of scores with shape (N, n_outputs), "
                "or an output with a .logits tensor (Hugging Face). Wrap a model that returns another tuple or dict "
                "so that it returns the logits tensor."
            )
        if raw.ndim != 2 or raw.shape[0] != n:
            raise ValueError(
                f"the model returned shape {tuple(raw.shape)} for a batch of {n}; expected (N, n_outputs) = ({n}, K)"
            )
        if self.autocast is not None and raw.is_floating_point():
            raw = raw.to(self.dtype)  # reduced-precision logits; the softmax and everything after in full
        if self.output != "probs":
            return raw
        if not self._softmax_checked:
            check_softmax_applies(raw)
            self._softmax_checked = True
        return torch.softmax(raw, dim=1)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """One forward pass in the output space, with autograd left to the caller (used by gradient methods)."""
        self.n_calls += 1
        self.n_evals += batch.shape[0]
        return self._to_output_space(self.call_model(batch), batch.shape[0])

    def call_model(self, batch: torch.Tensor, **extra: Any) -> Any:
        """The model's raw output on ``batch``: token ids go through :attr:`tokens` (by keyword, with an
        attention mask, for Hugging Face models); ``extra`` keywords are passed on."""
        if self.tokens is not None and not batch.is_floating_point():
            return self.tokens(self.model, batch, **extra)
        return self.model(batch, **extra)

    def reduced_precision(self) -> AbstractContextManager[object]:
        """The autocast context for forward passes without gradients (a no-op without ``autocast``)."""
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def session(self) -> AbstractContextManager[None]:
        """Hold the model's lock, with the model in eval mode, for a computation (re-entrant).

        Every use of the model goes through here, from cells, widgets and threads alike: see :class:`ModelLock`.
        """
        return self._lock.hold(self.model)

    def scores(
        self, x: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Scores ``(1, K)`` for a single prepared input ``x`` ``(1, ...)``; cached for the same unmodified tensor.

        ``compute(x)`` replaces the plain no-grad forward when the scores are not cached: a gradient method passes
        its own hooked forward with autograd, so f(x) and the gradients come from one pass, not two.
        """
        with self.session():
            cached = self._cached
            if (
                cached is not None
                and cached[2] is x
                and cached[3] is not None
                and cached[1] == tensor_identity(cached[0])
            ):
                return cached[3]
            if compute is None:
                with torch.inference_mode(), self.reduced_precision():
                    result = self.forward(x.clone())  # a model that changes its input must not change ours
            else:
                result = compute(x).detach()
            check_finite(result)
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

        No autograd, eval mode; batching (size and memory layout) as in :meth:`run_batched`.
        """
        outputs: list[torch.Tensor] = []

        def step(start: int, stop: int, layout: torch.memory_format) -> None:
            outputs.append(self.forward(make_batch(start, stop).contiguous(memory_format=layout)))

        with self.session(), torch.inference_mode(), self.reduced_precision():
            if n >= _MIN_LAYOUT_CALL and self.batch_size is None:
                self._choose_layout(input_shape, lambda: make_batch(0, _CPU_CANDIDATES[0]))
            self.run_batched(n, step, input_shape=input_shape, check_cancel=check_cancel)
        if not outputs:
            raise ValueError("nothing to evaluate: n must be at least 1")
        scores = torch.cat(outputs)
        check_finite(scores)
        return scores

    def run_batched(
        self,
        n: int,
        step: Callable[[int, int, torch.memory_format], object],
        *,
        input_shape: tuple[int, ...],
        purpose: str = "forward",
        batch_size: int | None = None,
        check_cancel: Callable[[], None] | None = None,
    ) -> None:
        """Call ``step(start, stop, layout)`` over ``0..n`` in batches whose size and memory layout this adapter
        chooses (``step`` makes its batch ``.contiguous(memory_format=layout)``).

        Work is done one batch at a time so memory stays bounded whatever ``n`` is. The plan is tuned per model,
        ``purpose`` (gradient passes keep activations, so they fit fewer inputs than plain forwards) and input
        shape, and remembered: on an accelerator it starts large and halves on out-of-memory (the failed batch is
        retried); on a CPU the first large call times a few sizes on its real work (see :class:`_Tuning`) and keeps
        the fastest. The layout is the one :meth:`evaluate` chose for these inputs (contiguous until then).
        ``batch_size`` fixes the starting size.
        ``check_cancel`` is called between batches and may raise :class:`Cancelled`; between batches, too,
        threads waiting for the model's lock get their turn (:meth:`ModelLock.let_others_run`).
        """
        key = (purpose, tuple(input_shape), str(self.device), self.autocast)
        batch_size = batch_size if batch_size is not None else self.batch_size
        layout = self.layout(input_shape)
        plan = self._known(key) if batch_size is None else (batch_size, layout)
        tuning = self._known(("trials", *key)) if plan is None else None
        if plan is None and tuning is None and self.device.type == "cpu" and n >= _MIN_TUNING_CALL:
            tuning = _Tuning(
                layout, _CPU_CANDIDATES if purpose == "forward" else _CPU_CANDIDATES_WITH_GRADIENTS
            )
            self._remember(("trials", *key), tuning)
        if plan is None and tuning is None:
            default = (
                min(n, _CPU_DEFAULT) if self.device.type == "cpu" else _ACCELERATOR_START.get(purpose, 256)
            )
            plan = (default, layout)
        start = 0
        while start < n:
            if start:
                self._lock.let_others_run(self.model)
            if check_cancel is not None:
                check_cancel()
            current = tuning.next_plan if tuning is not None else plan
            assert current is not None
            stop = min(n, start + current[0])
            began = time.perf_counter()
            try:
                step(start, stop, current[1])
            except torch.cuda.OutOfMemoryError:
                if stop - start == 1:
                    raise
                plan, tuning = ((stop - start) // 2, current[1]), None
                self._remember(key, plan)
                logger.info("out of memory at batch size %d; retrying with %d", stop - start, plan[0])
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            if tuning is not None and stop - start == current[0]:
                tuning.record(time.perf_counter() - began)
                if tuning.best is not None:
                    plan, tuning = tuning.best, None
                    self._remember(key, plan)
            start = stop

    def layout(self, input_shape: tuple[int, ...]) -> torch.memory_format:
        """The memory layout batches of inputs shaped ``input_shape`` run in: the one :meth:`evaluate` chose for
        them (contiguous until it has, and always with a fixed ``batch_size``). Inputs built in it need no copy."""
        if self.batch_size is not None:
            return _CONTIGUOUS
        return self._known(("layout", tuple(input_shape), str(self.device), self.autocast)) or _CONTIGUOUS

    def _choose_layout(self, input_shape: tuple[int, ...], sample: Callable[[], torch.Tensor]) -> None:
        """Pick the memory layout for batches of images, once per model and input shape.

        Channels-last ran the same convolutions up to 1.7x faster on this project's 2-core CPU, but not for
        every model, and a model that calls ``.view`` on its input fails with it; on a GPU it lets tensor cores
        run convolutions without transposes. A small batch runs twice in each layout (outputs discarded) before
        any real work, so every real batch of a computation uses the same layout and a seed gives bit-identical
        results from the first call on. On a GPU the sample is repeated to 64 images (a batch of 8 would time
        little but kernel launches) and each run is timed to completion.
        """
        key = ("layout", tuple(input_shape), str(self.device), self.autocast)
        if self._known(key) is not None:
            return
        layout = _CONTIGUOUS
        if self.device.type in ("cpu", "cuda") and len(input_shape) == 3:
            batch = sample()
            if self.device.type == "cuda":
                batch = batch.repeat(_GPU_PROBE_REPEAT, 1, 1, 1)
            best: dict[torch.memory_format, float] = {}
            for candidate in (_CONTIGUOUS, torch.channels_last, _CONTIGUOUS, torch.channels_last):
                self._wait()
                began = time.perf_counter()
                try:
                    self.model(batch.contiguous(memory_format=candidate))
                    self._wait()
                except Exception as error:
                    if candidate == _CONTIGUOUS:
                        raise  # the model fails on plain input: real work would fail the same way
                    # e.g. a model that views its input as a flat vector
                    logger.info(
                        "channels-last input not supported by this model (%s); keeping contiguous", error
                    )
                    best.pop(torch.channels_last, None)
                    break
                spent = time.perf_counter() - began
                best[candidate] = min(best.get(candidate, spent), spent)
            if len(best) == 2 and best[torch.channels_last] < _LAYOUT_GAIN * best[_CONTIGUOUS]:
                layout = torch.channels_last
        self._remember(key, layout)

    def _wait(self) -> None:
        """Wait for the GPU's queued work, so that a wall-clock time covers it (nothing to do on a CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _known(self, key: tuple) -> Any:
        if key in self._plans:
            return self._plans[key]
        try:
            with _registry_guard:
                return _tuned.get(self.model, {}).get(key)
        except TypeError:  # a callable that cannot be weakly referenced
            return None

    def _remember(self, key: tuple, value: Any) -> None:
        """Keep a tuned plan, trials in progress or a layout for this model (also for later adapters over it)."""
        self._plans.pop(("trials", *key), None)
        self._plans[key] = value
        with suppress(TypeError), _registry_guard:
            shared = _tuned.setdefault(self.model, {})
            shared.pop(("trials", *key), None)
            shared[key] = value


# What every method and widget accepts as ``model``: a module or callable mapping a batch to scores ``(N, K)``, or
# an adapter already wrapping one (to fix its batch size or precision, or to share its cache).
Model = Callable[[torch.Tensor], torch.Tensor] | ModelAdapter
