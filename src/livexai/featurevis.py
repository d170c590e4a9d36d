"""What does a unit look for? Feature visualisation by optimisation, and the dataset images that excite it most.

:func:`feature_visualization` optimises an input image so that one unit (a channel's mean, the neuron at its
centre, a class logit, or their negatives) is as large as it can be. Plain gradient ascent on pixels finds
high-frequency patterns that excite the unit without looking like anything; the standard recipe of Olah et al.
(2017, "Feature Visualization", Distill) makes the result readable: the image lives in a Fourier basis whose
coefficients are scaled by 1/frequency (so every frequency moves equally fast for the optimiser and low
frequencies dominate), colours are decorrelated and squashed into valid pixels by a sigmoid, and the image is
randomly shifted, scaled and rotated at every step (so only patterns robust to small moves survive).

:func:`top_activating` is the other half of the usual answer: the images of a data set that excite the unit
most, with where in each image the maximum lies.

The user's model is never changed: it runs in eval mode under its adapter's lock, gradients are taken with
``torch.autograd.grad`` with respect to the image's parameters only, and the hook that stops the forward pass at
the chosen layer (nothing past it is computed) is removed in ``finally``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._adapter import ModelAdapter
from ._call import as_adapter
from ._hooks import forward_hook
from ._inputs import check_choice, check_float, check_int, first_convolution
from .layers import as_maps, layout_of, resolve_layer

__all__ = ["FeatureVis", "TopActivations", "feature_visualization", "top_activating"]

Objective = Literal["channel", "neuron", "-channel", "-neuron"]
_OBJECTIVES = ("channel", "neuron", "-channel", "-neuron")
_PARAMETERIZATIONS = ("fourier", "pixel")

# Square root of the colour correlation of natural (ImageNet) images, Olah et al.'s figure: mixing three
# independent channels through it gives natural colour statistics, so the optimiser does not fight them.
_COLOUR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
_INIT_SD = 0.5  # the starting image: noise around mid-grey, strong enough that ReLUs are not all off
# The "standard" transforms, each step: shift by up to 1/16 of the side, scale by 0.9-1.1, rotate by up to 10°.
_JITTER, _SCALE, _DEGREES = 1 / 16, 0.1, 10.0
_N_PARTIAL = 8  # progress reports per run
# ReLUs pass redirected gradients for this many steps (Lucid's 16), later only in a step after one where some
# image got no gradient at all: they cost a second ReLU forward and extra passes backward. Redirected at every
# step, a step on ResNet-18 (CPU) took 1.5x a plain forward and backward pass; now 1.2x (benchmarks/featurevis.py).
_REDIRECT_STEPS = 16
_DEFAULT_SIZE = 128
_DEFAULT_BATCH = 64


@dataclass(eq=False)
class FeatureVis:
    """The images that maximise one or more units, and how far they got.

    ``images``: ``(N, H, W, 3)`` CPU float32 in [0, 1], display-ready (one-channel models are repeated to grey).
    ``inputs``: ``(N, C, H, W)`` the same images in the model's input normalisation, to feed to the model.
    ``objective_history``: ``(n_steps, N)`` the objective at each step (on the transformed image).
    ``activation``: ``(N,)`` the final objective on the untransformed image; ``random_activation`` the same on a
    uniformly random image, and ``example_activation`` on the best of the ``examples`` (None without them).
    ``channels``: the unit of each image (None: the whole layer); ``layer`` is None for a class logit.
    """

    images: torch.Tensor
    inputs: torch.Tensor
    objective_history: torch.Tensor
    activation: torch.Tensor
    random_activation: torch.Tensor
    example_activation: torch.Tensor | None
    channels: list[int | None]
    layer: str | None
    objective: str
    n_steps: int
    elapsed_s: float
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class TopActivations:
    """The ``k`` inputs that excite a channel most, strongest first.

    ``indices`` ``(k,)``: positions in the data as given (counting across batches); ``values`` ``(k,)``: the
    channel's mean activation on each (what they are ranked by, the ``"channel"`` objective of
    :func:`feature_visualization`); ``images`` ``(k, C, H, W)`` the inputs themselves (CPU). For spatial layers,
    ``locations`` ``(k, 2)`` is the (row, column) of the map's maximum, ``max_values`` ``(k,)`` its value and
    ``boxes`` ``(k, 4)`` the (top, left, bottom, right) pixels of the input that map cell covers; for vector
    layers and class logits they are None.
    """

    indices: torch.Tensor
    values: torch.Tensor
    images: torch.Tensor
    layer: str | None
    channel: int
    locations: torch.Tensor | None = None
    max_values: torch.Tensor | None = None
    boxes: torch.Tensor | None = None


# -- running the model up to a layer ------------------------------------------------------------------------------
class _Reached(Exception):
    """Raised by the hook on the chosen layer, carrying its output, so nothing after the layer runs."""

    def __init__(self, output: object) -> None:
        super().__init__("the chosen layer was reached")
        self.output = output


@contextmanager
def _stop_after(module: nn.Module) -> Iterator[None]:
    """While the block runs, the first call of ``module`` (from this thread) ends the forward pass with
    :class:`_Reached`; the hook is gone afterwards, whatever happens."""

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        raise _Reached(output)

    with forward_hook(module, hook):
        yield


class _RedirectedReLU(torch.autograd.Function):
    """ReLU forward; backward, for an image where no gradient would pass the ReLU at all, also the gradient at
    switched-off units that would switch them on (Olah et al.'s redirected ReLU). Without it, an objective whose
    units are all off on the starting image (a filter for pure red, on a grey start) never moves. Where any
    gradient passes, it is plain ReLU's.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.relu(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        plain = torch.ops.aten.threshold_backward(grad, x, 0)  # ReLU's own backward
        blocked = ~plain.flatten(1).any(dim=1)
        return torch.where(blocked.reshape(-1, *([1] * (grad.ndim - 1))) & (grad < 0), grad, plain)


@contextmanager
def _redirected_relus(model: object) -> Iterator[None]:
    """While the block runs, the model's ``nn.ReLU`` modules pass gradients as
    :class:`_RedirectedReLU` does; in-place ReLUs, whose input is gone, and ``F.relu`` calls are left as they are.
    Registered before the stop hook, so the layer's captured output is the redirected one."""

    def hook(_module: nn.Module, inputs: Any, output: Any) -> Any:
        if output is inputs[0] or not torch.is_grad_enabled():
            return None
        return _RedirectedReLU.apply(inputs[0])

    with ExitStack() as hooks:
        if isinstance(model, nn.Module):
            for relu in (m for m in model.modules() if isinstance(m, nn.ReLU)):
                hooks.enter_context(forward_hook(relu, hook))
        yield


@dataclass(frozen=True)
class _Unit:
    """Where the objective is read: ``module`` named ``name`` (both None: the model's logits)."""

    adapter: ModelAdapter
    name: str | None
    module: nn.Module | None

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """The unit's output on the prepared batch ``x`` as maps ``(N, C, h, w)`` (logits and vectors: 1x1)."""
        if self.module is None:
            return self.adapter.forward(x)[:, :, None, None]
        output = self._layer_output(x)
        if isinstance(output, torch.Tensor) and output.ndim == 2:
            return output[:, :, None, None]
        layout = (
            layout_of(self.adapter, self.module, x[:1], output) if isinstance(output, torch.Tensor) else None
        )
        return as_maps(output, str(self.name), None, layout)

    def _layer_output(self, x: torch.Tensor) -> object:
        assert self.module is not None
        with _stop_after(self.module):
            try:
                self.adapter.forward(x)
            except _Reached as reached:
                return reached.output
        raise ValueError(
            f"layer {self.name!r} did not run on this input; pick one from livexai.layers(model, x)"
        )

    def describe(self) -> str:
        return "the model's output" if self.name is None else f"layer {self.name!r}"


def _unit(model: object, layer: str | nn.Module | None) -> _Unit:
    adapter = as_adapter(model, "logits")
    if layer is None:
        return _Unit(adapter, None, None)
    name, module = resolve_layer(adapter.model, layer)
    return _Unit(adapter, name, module)


def _values(maps: torch.Tensor, channels: Sequence[int | None], objective: str) -> torch.Tensor:
    """The objective ``(N,)`` of each image from maps ``(N, C, h, w)``: its channel's mean, or its value at the
    centre (``channels`` all None: the whole layer's), with the sign of a negative objective."""
    if channels[0] is None:
        picked = maps
    else:
        rows = torch.arange(len(channels), device=maps.device)
        picked = maps[rows, torch.tensor(channels, device=maps.device)][:, None]
    height, width = picked.shape[-2:]
    if objective.endswith("neuron"):
        values = picked[..., height // 2, width // 2].mean(dim=1)
    else:
        values = picked.mean(dim=(1, 2, 3))
    return -values if objective.startswith("-") else values


def _check_channels(unit: _Unit, maps: torch.Tensor, channels: Sequence[int | None]) -> None:
    count = maps.shape[1]
    for channel in channels:
        if channel is not None and not 0 <= channel < count:
            what = "class" if unit.module is None else "channel"
            raise ValueError(
                f"{what} {channel} is out of range: {unit.describe()} has {count} "
                f"{'outputs' if unit.module is None else 'channels'} (0..{count - 1})"
            )


# -- the image: parameters and how they become pixels -------------------------------------------------------------
def _colour_matrix(n_channels: int, device: torch.device) -> torch.Tensor:
    """The decorrelating colour mix, scaled so that no channel's column is longer than 1 (identity unless RGB)."""
    if n_channels != 3:
        return torch.eye(n_channels, device=device)
    matrix = torch.tensor(_COLOUR_SQRT, device=device)
    return matrix / matrix.norm(dim=0).max()


def _fourier_scale(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``(height, width // 2 + 1)`` 1/frequency weights, normalised to a mean square of 1 so a white spectrum of
    unit standard deviation gives pixels of about unit standard deviation (no constant to tune by hand)."""
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    scale = 1.0 / torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / max(height, width))
    return scale / scale.pow(2).mean().sqrt()


def _parameterize(
    kind: str, shape: tuple[int, int, int, int], generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The leaf tensor to optimise and the function turning it into images ``(N, C, H, W)`` in [0, 1]."""
    n, channels, height, width = shape
    if kind == "pixel":
        pixels = torch.randn(shape, generator=generator, device=device) * _INIT_SD
        return pixels.requires_grad_(), torch.sigmoid
    scale = _fourier_scale(height, width, device)
    colour = _colour_matrix(channels, device)
    spectrum = torch.randn((n, channels, height, width // 2 + 1, 2), generator=generator, device=device)

    def render(coefficients: torch.Tensor) -> torch.Tensor:
        image = torch.fft.irfft2(torch.view_as_complex(coefficients) * scale, s=(height, width), norm="ortho")
        return torch.sigmoid(torch.einsum("ij,njhw->nihw", colour, image))

    return (spectrum * _INIT_SD).requires_grad_(), render


def _random_affine(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``images`` each shifted, scaled and rotated at random (reflecting at the borders), differentiably."""
    n = images.shape[0]

    def uniform(bound: float) -> torch.Tensor:
        draw = torch.rand(n, generator=generator, device=images.device, dtype=images.dtype)
        return (2 * draw - 1) * bound

    angle = uniform(math.radians(_DEGREES))
    scale = 1 + uniform(_SCALE)
    shift_x, shift_y = uniform(2 * _JITTER), uniform(2 * _JITTER)  # normalised coordinates span 2
    theta = torch.stack(
        [
            torch.stack([scale * angle.cos(), -scale * angle.sin(), shift_x], dim=1),
            torch.stack([scale * angle.sin(), scale * angle.cos(), shift_y], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _normalisation(
    mean: Sequence[float] | torch.Tensor | None,
    std: Sequence[float] | torch.Tensor | None,
    n_channels: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as ``(1, C, 1, 1)`` tensors (defaults 0 and 1: the model takes pixels in [0, 1])."""

    def as_column(name: str, value: object, default: float) -> torch.Tensor:
        column = torch.as_tensor(default if value is None else value, dtype=torch.float32, device=device)
        if column.numel() not in (1, n_channels):
            raise ValueError(
                f"{name} must have 1 or {n_channels} values (one per input channel), got {column.numel()}"
            )
        return column.reshape(-1).expand(n_channels).reshape(1, n_channels, 1, 1)

    mean_, std_ = as_column("mean", mean, 0.0), as_column("std", std, 1.0)
    if not bool((std_ > 0).all()):
        raise ValueError(f"std must be positive, got {std!r}")
    return mean_, std_


def _read_normalisation(preprocess: object) -> tuple[object, object] | None:
    """``(mean, std)`` as given by a preprocessing object, or None where it has none.

    Read, in order: Hugging Face image processors' ``image_mean``/``image_std`` (``(0, 1)`` when their
    ``do_normalize`` is off), an object's own ``mean``/``std`` (torchvision's ``Normalize``), then the steps of a
    composition (``.transforms`` as in torchvision's ``Compose``, or an ``nn.Sequential``), recursively.
    """
    if hasattr(preprocess, "image_mean") or hasattr(preprocess, "image_std"):
        if getattr(preprocess, "do_normalize", True) is False:
            return 0.0, 1.0
        mean, std = getattr(preprocess, "image_mean", None), getattr(preprocess, "image_std", None)
        return None if mean is None or std is None else (mean, std)
    mean, std = getattr(preprocess, "mean", None), getattr(preprocess, "std", None)
    if mean is not None and std is not None and not callable(mean) and not callable(std):
        return mean, std
    steps = getattr(preprocess, "transforms", None)
    if steps is None and isinstance(preprocess, nn.Sequential):
        steps = list(preprocess)
    if not isinstance(steps, (list, tuple)):
        return None
    found = [pair for pair in (_read_normalisation(step) for step in steps) if pair is not None]
    if len(found) > 1:
        raise ValueError(
            f"preprocess has {len(found)} normalisation steps; pass the model's input normalisation as mean= "
            "and std= instead"
        )
    return found[0] if found else None


def _normalisation_of(
    preprocess: object,
    mean: Sequence[float] | torch.Tensor | None,
    std: Sequence[float] | torch.Tensor | None,
    n_channels: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The input normalisation as ``(1, C, 1, 1)`` tensors, from ``mean``/``std`` or read from ``preprocess``;
    where both are given they must agree."""
    given = _normalisation(mean, std, n_channels, device)
    if preprocess is None:
        return given
    pair = _read_normalisation(preprocess)
    if pair is None:
        raise ValueError(
            f"could not read mean and std from preprocess={type(preprocess).__name__}: expected an object with "
            "mean and std (torchvision's Normalize), a composition whose .transforms list holds one (Compose), "
            "or a Hugging Face image processor with image_mean and image_std; or pass mean= and std= instead"
        )
    read = _normalisation(*pair, n_channels, device)
    for name, ours, theirs, value in (("mean", given[0], read[0], mean), ("std", given[1], read[1], std)):
        if value is not None and not torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6):
            raise ValueError(
                f"{name}={value!r} disagrees with the {name} read from preprocess "
                f"({[round(v, 6) for v in theirs.flatten().tolist()]}); pass one of them"
            )
    return read


class _TextBar:
    """A one-line progress bar on stderr, redrawn in place with a carriage return (terminals and Jupyter both
    honour it), at most every 0.1 s: ``feature_visualization [#####-----]  96/256  objective 12.3  4.1 s``."""

    _WIDTH = 24
    _EVERY_S = 0.1

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.began = time.perf_counter()
        self.drawn = -math.inf
        self.longest = 0

    def update(self, step: int, values: torch.Tensor) -> None:
        now = time.perf_counter()
        if step < self.steps and now - self.drawn < self._EVERY_S:
            return
        self.drawn = now
        filled = self._WIDTH * step // self.steps
        line = (
            f"\rfeature_visualization [{'#' * filled}{'-' * (self._WIDTH - filled)}] {step:>{len(str(self.steps))}}"
            f"/{self.steps}  objective {float(values.mean()):.4g}  {now - self.began:.1f} s"
        )
        self.longest = max(self.longest, len(line))
        sys.stderr.write(line.ljust(self.longest) + ("\n" if step == self.steps else ""))
        sys.stderr.flush()


# -- feature visualisation ----------------------------------------------------------------------------------------
def _channel_list(channel: int | Sequence[int] | None, layer: object, batch: int) -> list[int | None]:
    """One entry per image: each channel ``batch`` times (None: the whole layer)."""
    if channel is None:
        if layer is None:
            raise ValueError("with layer=None the objective is a class logit: pass channel=<class index>")
        chosen: list[int | None] = [None]
    else:
        many = channel if isinstance(channel, (list, tuple, torch.Tensor)) else [channel]
        chosen = [check_int("channel", int(c) if isinstance(c, torch.Tensor) else c, 0) for c in many]
        if not chosen:
            raise ValueError("channel is an empty list; pass at least one channel index")
    return [c for c in chosen for _ in range(batch)]


def _input_shape(model: object, size: int | tuple[int, int] | None, examples: object) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images: from ``size``, else from the examples, else 128x128; channels from the
    examples, else the model's first convolution, else 3."""
    first = first_convolution(model)
    sample = examples[0] if isinstance(examples, torch.Tensor) and examples.ndim == 4 else None
    channels = sample.shape[0] if sample is not None else (first.in_channels if first is not None else 3)
    if size is None:
        height, width = tuple(sample.shape[-2:]) if sample is not None else (_DEFAULT_SIZE, _DEFAULT_SIZE)
    elif isinstance(size, int):
        height = width = check_int("size", size, 8)
    else:
        height, width = (check_int("size", s, 8) for s in size)
    return int(channels), int(height), int(width)


def feature_visualization(
    model: nn.Module | ModelAdapter,
    layer: str | nn.Module | None,
    channel: int | Sequence[int] | None = None,
    *,
    objective: Objective = "channel",
    steps: int = 256,
    size: int | tuple[int, int] | None = None,
    batch: int | None = None,
    lr: float = 0.05,
    transforms: Literal["standard"] | None = "standard",
    parameterization: Literal["fourier", "pixel"] = "fourier",
    seed: int = 0,
    progress: Callable[[FeatureVis], None] | bool | None = False,
    preprocess: object = None,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    examples: torch.Tensor | Iterable[torch.Tensor] | None = None,
) -> FeatureVis:
    """Optimise images so that a unit of ``layer`` is as large (or, ``"-..."``, as small) as it can be.

    Parameters
    ----------
    model: an ``nn.Module`` (or :class:`ModelAdapter`) taking images ``(N, C, H, W)``.
    layer: a name from :func:`livexai.layers` or the module; None reads the model's output (class logits).
    channel: a channel (class with ``layer=None``) or a list of them, optimised together, one image each, in
        one batch; None: the whole layer's mean activation (DeepDream's objective).
    objective: ``"channel"`` (the channel's mean over the map), ``"neuron"`` (its centre value), or their
        negatives ``"-channel"``, ``"-neuron"``.
    steps, lr: Adam steps and learning rate (Olah et al.'s 0.05).
    size: ``H`` or ``(H, W)``; default: the examples' size, else 128.
    batch: images per channel, from different random starts (default 1).
    transforms: ``"standard"`` (random shift, scale and rotation each step) or None.
    parameterization: ``"fourier"`` (1/frequency-scaled spectrum, decorrelated colour) or ``"pixel"``; with
        ``transforms=None`` the latter is the naive gradient ascent the recipe improves on.
    seed: seeds the starting image and the transforms (a generator on the model's device).
    progress: True draws a text bar on stderr (step, objective, time), redrawn in place in a terminal or a
        notebook; a callable receives a partial :class:`FeatureVis` 8 times per run instead (it may raise
        :class:`livexai.Cancelled` to stop); False or None for neither.
    preprocess: where to read the model's input normalisation from: torchvision's ``Normalize`` (anything with
        ``mean`` and ``std``), a ``Compose`` holding one, or a Hugging Face image processor (``image_mean``,
        ``image_std``). Only the normalisation is read; nothing else of it is applied.
    mean, std: the model's input normalisation (per channel), when not read from ``preprocess``; images are
        optimised in [0, 1] pixels and fed to the model as ``(pixels - mean) / std``. Defaults 0 and 1 (the
        shipped models normalise inside).
    examples: images ``(N, C, H, W)`` (or an iterable of batches); the best one's objective is reported as
        ``example_activation`` for comparison.
    """
    started = time.perf_counter()
    objective = check_choice("objective", objective, _OBJECTIVES)  # type: ignore[assignment]
    steps = check_int("steps", steps, 1)
    lr = check_float("lr", lr, 0.0, open_low=True)
    if transforms is not None:
        check_choice("transforms", transforms, ("standard",))
    parameterization = check_choice("parameterization", parameterization, _PARAMETERIZATIONS)  # type: ignore[assignment]
    if not isinstance(progress, bool) and progress is not None and not callable(progress):
        raise TypeError(
            f"progress must be True (a text bar), a callable receiving a partial FeatureVis, or False; "
            f"got {progress!r}"
        )
    if layer is None and objective.endswith("neuron"):
        raise ValueError("with layer=None the objective is a class logit, which has no centre: use 'channel'")
    unit = _unit(model, layer)
    channels = _channel_list(channel, layer, 1 if batch is None else check_int("batch", batch, 1))
    n_channels, height, width = _input_shape(unit.adapter.model, size, examples)
    device = unit.adapter.device
    mean_, std_ = _normalisation_of(preprocess, mean, std, n_channels, device)
    generator = torch.Generator(device=device).manual_seed(check_int("seed", seed, 0))
    shape = (len(channels), n_channels, height, width)

    def to_input(pixels: torch.Tensor) -> torch.Tensor:
        return ((pixels - mean_) / std_).to(unit.adapter.dtype)

    def evaluate(pixels: torch.Tensor) -> torch.Tensor:
        return _values(unit.maps(to_input(pixels)), channels, objective)

    with unit.adapter.session(), torch.no_grad():
        try:
            maps = unit.maps(to_input(torch.rand(shape, generator=generator, device=device)))
        except RuntimeError as error:  # e.g. a linear layer sized for other images
            raise ValueError(
                f"the model failed on images of {n_channels}x{height}x{width} ({error}); pass size= with the "
                "size it takes, or examples= images to read it from"
            ) from error
        _check_channels(unit, maps, channels)
        random_activation = _values(maps, channels, objective)
    example_activation = (
        None if examples is None else _best_example(unit, examples, channels, objective, None)
    )
    leaf, render = _parameterize(parameterization, shape, generator, device)
    optimiser = torch.optim.Adam([leaf], lr=lr)
    history: list[torch.Tensor] = []

    def result(done: int) -> FeatureVis:
        with torch.no_grad():
            pixels = render(leaf)
            with unit.adapter.session():
                final = evaluate(pixels)
        display = pixels.expand(-1, 3, -1, -1) if n_channels == 1 else pixels[:, :3]
        return FeatureVis(
            images=display.permute(0, 2, 3, 1).detach().to("cpu", torch.float32),
            inputs=to_input(pixels).detach().to("cpu", torch.float32),
            objective_history=torch.stack(history).to("cpu", torch.float32),
            activation=final.detach().to("cpu", torch.float32),
            random_activation=random_activation.detach().to("cpu", torch.float32),
            example_activation=example_activation,
            channels=channels,
            layer=unit.name,
            objective=objective,
            n_steps=done,
            elapsed_s=time.perf_counter() - started,
            params={
                "lr": lr,
                "transforms": transforms,
                "parameterization": parameterization,
                "seed": seed,
                "size": (height, width),
            },
        )

    report_every = max(1, math.ceil(steps / _N_PARTIAL))
    bar = _TextBar(steps) if progress is True else None
    stuck = False
    for step in range(1, steps + 1):
        redirect = step <= _REDIRECT_STEPS or stuck
        relus = _redirected_relus(unit.adapter.model) if redirect else nullcontext()
        with unit.adapter.session(), torch.enable_grad(), relus:
            pixels = render(leaf)
            if transforms is not None:
                pixels = _random_affine(pixels, generator)
            values = evaluate(pixels)
            (leaf.grad,) = torch.autograd.grad(-values.sum(), [leaf])
        stuck = not redirect and not bool(leaf.grad.flatten(1).any(dim=1).all())
        optimiser.step()
        history.append(values.detach())
        if bar is not None:
            bar.update(step, values.detach())
        elif progress and step % report_every == 0 and step < steps:
            progress(result(step))
    return result(steps)


# -- dataset examples ---------------------------------------------------------------------------------------------
def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """``images`` in batches: a tensor ``(N, C, H, W)`` cut into ``batch_size`` rows, an iterable as it comes
    (a ``DataLoader`` yielding ``(images, labels)`` pairs gives its images)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be a batch (N, C, H, W), got shape {tuple(images.shape)}")
        yield from images.split(batch_size)
        return
    for item in images:
        batch = item[0] if isinstance(item, (list, tuple)) else item
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
            got = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"each batch of images must be a tensor (N, C, H, W), got {got}")
        yield batch


def _scan(
    unit: _Unit, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Each batch of ``images`` (as given, on the CPU) with the unit's maps on it ``(n, C, h, w)``, no autograd."""
    size = check_int("batch_size", batch_size, 1) if batch_size is not None else _DEFAULT_BATCH
    for batch in _batches(images, size):
        with unit.adapter.session(), torch.inference_mode():
            maps = unit.maps(batch.to(unit.adapter.device, unit.adapter.dtype))
        yield batch, maps


def _best_example(
    unit: _Unit,
    examples: torch.Tensor | Iterable[torch.Tensor],
    channels: Sequence[int | None],
    objective: str,
    batch_size: int | None,
) -> torch.Tensor:
    """``(N,)`` the largest objective any example reaches, for each image's unit."""
    best = None
    for batch, maps in _scan(unit, examples, batch_size):
        per_unit = torch.stack([_values(maps, [c] * batch.shape[0], objective) for c in channels], dim=1)
        top = per_unit.amax(dim=0)
        best = top if best is None else torch.maximum(best, top)
    if best is None:
        raise ValueError("examples is empty")
    return best.to("cpu", torch.float32)


def top_activating(
    model: nn.Module | ModelAdapter,
    layer: str | nn.Module | None,
    channel: int,
    images: torch.Tensor | Iterable[torch.Tensor],
    *,
    k: int = 9,
    batch_size: int | None = None,
) -> TopActivations:
    """The ``k`` images that excite ``channel`` of ``layer`` most (``layer=None``: class logit ``channel``).

    Ranked by the channel's mean activation, the quantity :func:`feature_visualization` maximises, so the two
    can be compared (ties: the earlier image first). ``images`` is a tensor ``(N, C, H, W)`` run in batches of
    ``batch_size`` (default 64) or an iterable of batches; only the running top ``k`` is kept, so a large data
    set streams through.
    """
    k = check_int("k", k, 1)
    channel = check_int("channel", channel, 0)
    unit = _unit(model, layer)
    top: _Top | None = None
    seen = 0
    for batch, maps in _scan(unit, images, batch_size):
        _check_channels(unit, maps, [channel])
        picked = maps[:, channel].float()
        flat = picked.flatten(1)
        found = _Top(
            values=picked.mean(dim=(1, 2)).cpu(),
            indices=torch.arange(seen, seen + batch.shape[0]),
            images=batch.detach().cpu(),
            max_values=flat.amax(dim=1).cpu(),
            argmax=flat.argmax(dim=1).cpu(),
            grid=(picked.shape[-2], picked.shape[-1]),
        )
        top = found.best(k) if top is None else top.merged(found).best(k)
        seen += batch.shape[0]
    if top is None:
        raise ValueError("images is empty: pass at least one image")
    return top.result(unit.name, channel)


@dataclass(eq=False)
class _Top:
    """The best images found so far, with each one's mean, maximum and the flat position of the maximum."""

    values: torch.Tensor
    indices: torch.Tensor
    images: torch.Tensor
    max_values: torch.Tensor
    argmax: torch.Tensor
    grid: tuple[int, int]

    def merged(self, other: _Top) -> _Top:
        """Both sets, this one first (so a stable sort puts earlier images first among ties)."""
        return _Top(
            *(torch.cat([a, b]) for a, b in zip(self._tensors(), other._tensors(), strict=True)),
            grid=self.grid,
        )

    def best(self, k: int) -> _Top:
        order = torch.argsort(self.values, descending=True, stable=True)[:k]
        return _Top(*(tensor[order] for tensor in self._tensors()), grid=self.grid)

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self.values, self.indices, self.images, self.max_values, self.argmax

    def result(self, layer: str | None, channel: int) -> TopActivations:
        """As a :class:`TopActivations`; a 1x1 grid (vector layer, logits) has no location."""
        found = TopActivations(self.indices, self.values, self.images, layer, channel)
        height, width = self.grid
        if height * width == 1:
            return found
        rows, cols = self.argmax // width, self.argmax % width
        image_h, image_w = self.images.shape[-2:]
        boxes = torch.stack(
            [
                rows * image_h // height,
                cols * image_w // width,
                (rows + 1) * image_h // height,
                (cols + 1) * image_w // width,
            ],
            dim=1,
        )
        return replace(
            found, locations=torch.stack([rows, cols], dim=1), max_values=self.max_values, boxes=boxes
        )
