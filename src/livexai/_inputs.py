"""Validation and normalisation of what users pass in: inputs, targets, display images, parameters.

Every check raises a ``TypeError`` or ``ValueError`` whose message says what was wrong and what was expected,
so the same message can be shown as-is in a widget.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary  # tensors compare elementwise: keys go by identity

InputKind = Literal["image", "tabular", "sequence"]


def as_single_input(x: object, name: str = "x") -> tuple[torch.Tensor, InputKind]:
    """Return ``x`` as a batch of one, ``(1, C, H, W)`` for images or ``(1, F)`` for rows, and its kind.

    Accepted: an image ``(C, H, W)`` or ``(1, C, H, W)``, a row ``(F,)`` or ``(1, F)``. The caller's tensor is never
    modified; the result may be a view of it.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor (model-ready, e.g. (C, H, W) for an image or (F,) for a row), "
            f"got {type(x).__name__}; convert with torch.as_tensor(...)"
        )
    if x.ndim in (1, 3):
        x = x.unsqueeze(0)
    if x.ndim not in (2, 4):
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}; expected an image (C, H, W) or (1, C, H, W), or a row (F,) or (1, F)"
        )
    if x.shape[0] != 1:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}: a batch of {x.shape[0]} inputs? Explain one input at a time "
            f"({name}[i]). Accepted: an image (C, H, W), a greyscale image as (1, H, W) ({name}[None] for an "
            f"(H, W) tensor), or a tabular row (F,); each may carry a leading batch of 1"
        )
    if x.ndim == 4 and not x.is_floating_point() and not x.is_complex():
        advice = f"{name}.float() / 255" if x.dtype == torch.uint8 else f"{name}.float()"
        raise TypeError(
            f"{name} is an image of {x.dtype} values; models take floating-point images. Convert it as the model "
            f"expects, e.g. {advice} then the model's own normalisation (uint8 pixels are 0-255)"
        )
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.is_floating_point() and not _known_finite(x):
        raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers")
    if x.is_complex():
        raise TypeError(f"{name} is complex ({x.dtype}); expected real numbers")
    return x, ("image" if x.ndim == 4 else "tabular")


# Inputs found finite, by identity, with their in-place version counter then: a widget or a loop explaining the
# same tensor again skips the check (a full pass over the input and a device sync), and an in-place edit redoes it.
_FINITE: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _known_finite(x: torch.Tensor) -> bool:
    """Whether ``x`` holds only finite values: checked once per unmodified tensor."""
    key = _unmodified_key(x)
    if key is not None and _FINITE.get(key[0]) == key[1]:
        return True
    finite = bool(torch.isfinite(x).all())
    if finite and key is not None:
        _FINITE[key[0]] = key[1]
    return finite


def tensor_identity(x: torch.Tensor) -> tuple:
    """What makes two tensors the same input: memory, layout, dtype, device and the in-place version counter.

    Tensors made under ``torch.inference_mode`` have no version counter: a fresh object stands in, which never
    matches, so they are never taken for the same (they could be changed in place unseen).
    """
    version = object() if x.is_inference() else x._version
    return (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype, x.device, version)


def _unmodified_key(x: torch.Tensor) -> tuple[torch.Tensor, tuple] | None:
    """``(owner, key)``: the tensor to remember ``x`` by (its base, for a view made anew each call, ``x[None]``)
    and its :func:`tensor_identity`; None for inference tensors, which could never be found again."""
    if x.is_inference():
        return None
    return (x._base if x._base is not None else x), tensor_identity(x)


# Display images derived from inputs, remembered like _FINITE: one image explained again is converted once.
_DISPLAY: WeakIdKeyDictionary = WeakIdKeyDictionary()


def display_image_of(image: Any, source: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """:func:`display_image` of ``image`` for the model-ready ``x``, remembered for the caller's unmodified
    input ``source`` when the picture is derived from it (``image`` None). Each call gets its own copy."""
    key = _unmodified_key(source) if image is None else None
    if key is not None:
        known = _DISPLAY.get(key[0])
        if known is not None and known[0] == key[1]:
            return known[1].clone()
    picture = display_image(image, x)
    if key is not None:
        _DISPLAY[key[0]] = (key[1], picture.clone())
    return picture


def first_convolution(model: object) -> nn.Conv2d | None:
    """The model's first 2-d convolution (in registration order), which says how many channels images have."""
    if not isinstance(model, nn.Module):
        return None
    return next((module for module in model.modules() if isinstance(module, nn.Conv2d)), None)


def as_greyscale(model: object, x: object) -> object:
    """An ``(H, W)`` tensor as a one-channel image ``(1, H, W)`` when the model's first convolution takes one
    channel (it would otherwise read as a batch of ``H`` rows); anything else is returned as it is."""
    if not (isinstance(x, torch.Tensor) and x.ndim == 2 and x.shape[0] > 1):
        return x  # decided without walking the model's modules: this runs on every call
    first = first_convolution(model)
    return x.unsqueeze(0) if first is not None and first.in_channels == 1 else x


def check_channels(model: object, x: torch.Tensor, error: Exception) -> None:
    """After the model failed on image ``x`` ``(1, C, H, W)``: if its first convolution takes another number of
    channels, say so (and whether ``x`` looks like ``(H, W, C)``) instead of torch's convolution error."""
    first = first_convolution(model)
    if x.ndim != 4 or first is None or x.shape[1] == first.in_channels:
        return
    wanted = first.in_channels
    hint = ", which looks like (H, W, C): pass x.permute(2, 0, 1)" if x.shape[-1] == wanted else ""
    raise ValueError(
        f"the model's first convolution takes {wanted} channels: expected x as (C, H, W) with C = {wanted}; "
        f"got {tuple(x.shape[1:])}{hint}"
    ) from error


def resolve_target(target: object, scores: torch.Tensor) -> int:
    """The output index to explain: ``target`` checked against ``scores`` ``(1, K)``, or the arg-max if None."""
    n_outputs = scores.shape[1]
    if target is None:
        return int(scores[0].argmax())
    if isinstance(target, torch.Tensor) and target.numel() == 1:
        target = target.item()
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise TypeError(f"target must be an int class index or None (the top class), got {target!r}")
    if not 0 <= int(target) < n_outputs:
        raise ValueError(
            f"target {int(target)} is out of range: the model has {n_outputs} outputs (0..{n_outputs - 1})"
        )
    return int(target)


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (``high=None``: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_float(
    name: str, value: object, low: float, high: float | None = None, *, open_low: bool = False
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    too_low = value <= low if open_low else value < low
    if not np.isfinite(value) or too_low or (high is not None and value > high):
        bound = (
            ("greater than" if open_low else "at least")
            + f" {low}"
            + (f" and at most {high}" if high else "")
        )
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return str(value)


def display_image(image: Any, x: torch.Tensor) -> torch.Tensor:
    """An ``(H, W, 3)`` float32 CPU image in ``[0, 1]`` to draw explanations over.

    ``image`` may be None (then it is derived from the model-ready ``x`` ``(1, C, H, W)``, min-max scaled, which
    also undoes a normalisation well enough to see), a PIL image, or an array/tensor ``(H, W)``, ``(H, W, 3|4)`` or
    ``(3, H, W)``, uint8 (0–255) or float. Its size must match ``x``'s.
    """
    height, width = x.shape[-2:]
    if image is None:
        picture = x[0].detach().to("cpu", torch.float32)
        picture = picture.mean(0, keepdim=True) if picture.shape[0] not in (1, 3) else picture
        picture = picture.permute(1, 2, 0)
    else:
        picture = _as_hwc(image)
    if picture.shape[2] == 1:
        picture = picture.expand(-1, -1, 3)
    if tuple(picture.shape[:2]) != (height, width):
        raise ValueError(
            f"image is {picture.shape[0]}x{picture.shape[1]} but the input is {height}x{width}; "
            "pass the display image at the model's input size"
        )
    low, high = float(picture.min()), float(picture.max())
    if low < 0.0 or high > 1.0:
        picture = (picture - low) / max(high - low, 1e-12)
    return picture.contiguous()


def _as_hwc(image: Any) -> torch.Tensor:
    """A user's display image as an ``(H, W, C)`` float tensor, uint8 scaled to [0, 1]."""
    if not isinstance(image, (torch.Tensor, np.ndarray)):
        try:
            image = np.asarray(image)  # PIL images and nested lists
        except Exception as error:  # pragma: no cover - exotic objects
            raise TypeError(
                f"image must be an array, tensor or PIL image, got {type(image).__name__}"
            ) from error
    array = (
        image.detach().cpu()
        if isinstance(image, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(image))
    )
    if array.ndim == 2:
        array = array.unsqueeze(-1)
    if array.ndim != 3:
        raise ValueError(
            f"image has shape {tuple(array.shape)}; expected (H, W), (H, W, 3), (H, W, 4) or (3, H, W)"
        )
    if array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3):
        array = array.permute(1, 2, 0)
    if array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image has shape {tuple(array.shape)}; expected 1, 3 or 4 colour channels")
    scale = 255.0 if array.dtype == torch.uint8 else 1.0
    array = array[..., :3].to(torch.float32) / scale
    if not bool(torch.isfinite(array).all()):
        raise ValueError("image contains NaN or infinite values")
    return array
