"""Masked images: what LIME and KernelSHAP feed the model, checked against the plain per-pixel choice."""

from __future__ import annotations

import pytest
import torch

from livexai._features import ImageMasker


def _reference(
    masks: torch.Tensor, segments: torch.Tensor, x: torch.Tensor, fill: torch.Tensor
) -> torch.Tensor:
    """Each image pixel by pixel: x's value where the pixel's superpixel is on, fill's elsewhere."""
    images = fill.expand(masks.shape[0], *x.shape[1:]).clone()
    for i, mask in enumerate(masks):
        on = mask[segments]
        images[i][:, on] = x[0][:, on]
    return images


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("width", [6, 7])  # 5 x 7 x 1 values: odd, gathered one at a time
def test_masked_images_choose_x_or_fill_per_superpixel_in_the_asked_layout(
    layout: torch.memory_format, dtype: torch.dtype, channels: int, width: int
) -> None:
    gen = torch.Generator().manual_seed(width)
    segments = torch.randint(0, 7, (5, width), generator=gen)
    x = torch.randn(1, channels, 5, width, generator=gen).to(dtype)
    masks = torch.rand(9, 7, generator=gen) < 0.5
    fills = {
        "baseline": torch.randn(1, channels, 5, width, generator=gen).to(dtype),
        "negative zero": torch.full((1, channels, 5, width), -0.0, dtype=dtype),  # bits kept, not just values
        "one per mask": torch.randn(9, channels, 5, width, generator=gen).to(dtype),
    }
    for name, fill in fills.items():
        which = None if fill.shape[0] == 1 else torch.arange(9).flip(0)  # the fill rows in another order
        images = ImageMasker(x, segments, fill, layout)(masks, which)
        if which is not None:
            fill = fill[which]
        assert images.shape == (9, channels, 5, width) and images.dtype == dtype, name
        assert images.is_contiguous(memory_format=layout), name
        assert torch.equal(_bits(images), _bits(_reference(masks, segments, x, fill))), name


def _bits(images: torch.Tensor) -> torch.Tensor:
    """The raw bytes of ``images`` in NCHW order: -0.0 and 0.0 differ."""
    return images.contiguous().flatten().view(torch.uint8)
