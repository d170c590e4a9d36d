"""What every method does first and last: check the input, pick the target, and package the Explanation.

Methods call :func:`prepare` once, do their own work with ``call.adapter`` and ``call.x``, and build their
result with :meth:`PreparedCall.explanation`, so timing, evaluation counts and the common fields are filled in
the same way everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ._adapter import Model, ModelAdapter, OutputSpace
from ._inputs import (
    InputKind,
    as_greyscale,
    as_single_input,
    check_channels,
    display_image_of,
    resolve_target,
)
from ._tokens import TokenInput, token_input
from .explanation import Explanation


@dataclass(eq=False)
class PreparedCall:
    """A validated input ready for a method: ``x`` ``(1, ...)`` on the model's device, the target, f(x)."""

    adapter: ModelAdapter
    x: torch.Tensor
    kind: InputKind
    target: int
    scores: torch.Tensor
    image: torch.Tensor | None
    feature_names: list[str] | None = None
    tokens: TokenInput | None = None
    started: float = field(default_factory=time.perf_counter)
    evals_before: int = 0

    @property
    def prediction(self) -> float:
        return float(self.scores[0, self.target])

    def explanation(
        self, method: str, attributions: torch.Tensor, params: dict[str, Any], **fields: Any
    ) -> Explanation:
        """Package a result: tensors moved to the CPU as float32, time and evaluations since :func:`prepare`."""
        cpu = {
            name: (
                value.detach().to("cpu", torch.float32)
                if isinstance(value, torch.Tensor) and name != "segments"
                else value
            )
            for name, value in fields.items()
        }
        if isinstance(cpu.get("segments"), torch.Tensor):
            cpu["segments"] = cpu["segments"].detach().to("cpu", torch.long)
        return Explanation(
            method=method,
            target=self.target,
            attributions=attributions.detach().to("cpu", torch.float32),
            prediction=self.prediction,
            params={"output": self.adapter.output, **self._precision(), **params},
            n_evals=self.adapter.n_evals - self.evals_before,
            elapsed_s=time.perf_counter() - self.started,
            image=self.image,
            feature_names=self.feature_names,
            **cpu,
        )

    def _precision(self) -> dict[str, str]:
        """``{"autocast": "bfloat16"}`` when the forward passes ran in reduced precision, so a result says so."""
        dtype = self.adapter.autocast
        return {} if dtype is None else {"autocast": str(dtype).removeprefix("torch.")}


def as_adapter(model: Model, output: OutputSpace) -> ModelAdapter:
    """Reuse an adapter (a widget keeps one, with its cached f(x)) or wrap a model in a new one."""
    if isinstance(model, ModelAdapter):
        if model.output == output:
            return model
        return ModelAdapter(
            model.model,
            output=output,
            device=model.device,
            batch_size=model.batch_size,
            autocast=model.autocast,
        )
    return ModelAdapter(model, output=output)


def prepare(
    model: Model,
    x: torch.Tensor,
    *,
    target: int | None,
    output: OutputSpace = "logits",
    image: Any = None,
    feature_names: list[str] | None = None,
    expect: InputKind | None = None,
    compute_scores: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> PreparedCall:
    """Validate ``x``, run the model once on it (cached), resolve ``target`` and the display image.

    ``compute_scores`` is the forward pass to use if f(x) is not cached (see :meth:`ModelAdapter.scores`).
    """
    started = time.perf_counter()
    adapter = as_adapter(model, output)
    tokens = token_input(adapter.model, x)
    adapter.tokens = None if tokens is None else tokens.call  # ids stay ids in adapter.prepare
    if tokens is not None:
        batch, kind = tokens.ids, "sequence"
    else:
        batch, kind = as_single_input(as_greyscale(adapter.model, x))
    single = batch  # the caller's input as a batch of one (a view), before the model-ready copy
    if expect is not None and kind != expect:
        wanted = {
            "image": "an image (C, H, W)",
            "tabular": "a tabular row (F,)",
            "sequence": "a sequence of token ids (T,) for a model with an embedding layer",
        }[expect]
        raise ValueError(
            f"this method explains {wanted}; got x with shape {tuple(getattr(x, 'shape', batch.shape))}"
        )
    evals_before = adapter.n_evals
    batch = adapter.prepare(batch)
    if tokens is not None:
        tokens = tokens.on(batch)
        adapter.tokens = tokens.call
    try:
        scores = adapter.scores(batch, compute_scores)
    except RuntimeError as error:  # torch's own message about a convolution's channels, made specific
        check_channels(adapter.model, batch, error)
        raise
    if feature_names is not None and (kind == "image" or len(feature_names) != batch.shape[1]):
        raise ValueError(
            f"feature_names has {len(feature_names)} names; expected one per column (or token) of x"
        )
    return PreparedCall(
        adapter=adapter,
        x=batch,
        kind=kind,
        target=resolve_target(target, scores),
        scores=scores,
        image=display_image_of(image, single, batch) if kind == "image" else None,
        feature_names=list(feature_names) if feature_names is not None else None,
        tokens=tokens,
        started=started,
        evals_before=evals_before,
    )


def last_result(results: Iterator[Explanation]) -> Explanation:
    """The final explanation of a progressive method (its iterator always yields at least once)."""
    final = None
    for final in results:  # noqa: B007 - only the last one is wanted
        pass
    if final is None:
        raise RuntimeError("a progressive method yielded no result")
    return final
