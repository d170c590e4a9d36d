"""What removed pixels show in the deletion and insertion curves: a fixed image, or ROAD's imputation.

A fixed substrate (``"blur"``, ``"zero"``, ``"mean"``, a number or a tensor) is one image ``(1, C, H, W)``
from :func:`livexai._features.image_fill`. ``"road"`` is the noisy linear imputation of ROAD (Rong et al.,
"A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022): a blurred or black patch
tells the model *where* pixels were removed, whatever their content was, so the curve partly measures that
shortcut; ROAD fills each removed region by interpolating from its border instead, which leaves no sharp
outline for the model to notice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._features import generator, image_fill

SUBSTRATES: tuple[str, ...] = ("blur", "zero", "mean", "road")

# ROAD's neighbour weights: 1/6 for the four direct neighbours, 1/12 for the four diagonal ones (Rong et al.).
# Symmetric, so a linear ramp is its own weighted neighbour average and is imputed exactly.
_NEIGHBOURS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
# Noise added to imputed pixels, as a share of the input's standard deviation (ROAD adds noise of 0.01 to
# normalised images, whose standard deviation is about 1), so the model cannot tell them by their smoothness.
ROAD_NOISE = 0.01
# The conjugate-gradient solve stops once every image's residual is this small relative to its right-hand side
# (float32 reaches about 3e-6; float64 goes further); 10 to 20 multigrid-preconditioned iterations get there
# at 224x224.
_TOLERANCE = {torch.float64: 1e-10}
_DEFAULT_TOLERANCE = 1e-5
_MAX_ITERATIONS = 200
# Multigrid: damped Jacobi sweeps (damping below 1 for this stencil, whose off-diagonal weights sum to its
# diagonal) before and after each coarse correction; grids are halved until a side is under _COARSEST pixels,
# where _COARSEST_SWEEPS sweeps stand in for an exact solve.
_DAMPING = 0.8
_SWEEPS = 2
_COARSEST = 8
_COARSEST_SWEEPS = 20


def check_substrate(substrate: object) -> object:
    """``substrate`` if it is one of :data:`SUBSTRATES`, a number or a tensor; a ValueError saying so otherwise."""
    if isinstance(substrate, str) and substrate not in SUBSTRATES:
        raise ValueError(
            f"unknown substrate {substrate!r}; expected one of {', '.join(map(repr, SUBSTRATES))}, "
            "a number or a tensor broadcastable to the input"
        )
    if not isinstance(substrate, (str, int, float, torch.Tensor)) or isinstance(substrate, bool):
        raise TypeError(
            f"substrate must be one of {', '.join(map(repr, SUBSTRATES))}, a number or a tensor; "
            f"got {type(substrate).__name__}"
        )
    return substrate


class Substrate:
    """Builds perturbed copies of one input ``x`` ``(1, C, H, W)``: removed pixels replaced by the substrate."""

    def __init__(self, x: torch.Tensor, substrate: object) -> None:
        self.x = x
        self.road = substrate == "road" if isinstance(substrate, str) else False
        self.fill = None if self.road else image_fill(x, check_substrate(substrate))
        self.noise = ROAD_NOISE * float(x.std()) if self.road and x[0, 0].numel() > 1 else 0.0

    def apply(self, removed: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Images ``(n, C, H, W)``: ``x`` with the pixels of ``removed`` ``(n, 1, H, W)`` (bool) replaced.

        ``seeds`` (one int per image) seed ROAD's noise, so an image is the same whatever batch it is built in.
        """
        if self.fill is not None:
            return torch.where(removed, self.fill, self.x)
        return road_impute(
            self.x.expand(removed.shape[0], -1, -1, -1), removed, noise=self.noise, seeds=seeds
        )


def road_impute(
    images: torch.Tensor, removed: torch.Tensor, *, noise: float = 0.0, seeds: list[int] | None = None
) -> torch.Tensor:
    """ROAD's noisy linear imputation of the ``removed`` pixels ``(n, 1, H, W)`` of ``images`` ``(n, C, H, W)``.

    Each removed pixel becomes the weighted average of its 8 neighbours (those inside the image), removed
    neighbours included as unknowns: a sparse linear system whose solution interpolates every removed region
    from its border (exact for linear ramps away from the image's edge). It is solved per image and channel by
    multigrid-preconditioned conjugate gradients on the device, then ``noise`` times standard normal noise
    (seeded by ``seeds``) is added to the imputed pixels. An image with every pixel removed has nothing to
    interpolate from and becomes zeros (plus noise).
    """
    unknown = removed.to(images.dtype)
    known = images * (1.0 - unknown)
    levels = _hierarchy(unknown)
    right = unknown * _neighbour_sum(known)
    imputed = known + unknown * _conjugate_gradients(levels, right)
    if noise > 0:
        imputed = imputed + unknown * noise * _seeded_normal(images, seeds)
    return imputed


def _neighbour_sum(values: torch.Tensor) -> torch.Tensor:
    """The ROAD-weighted sum of each pixel's in-image neighbours, channel by channel (zeros beyond the edge)."""
    channels = values.shape[1]
    kernel = _NEIGHBOURS.to(values.device, values.dtype).expand(channels, 1, 3, 3)
    return F.conv2d(values, kernel, padding=1, groups=channels)


class _Level:
    """The system on one grid: ``unknown`` ``(n, 1, h, w)`` (1 where a pixel is solved for) and its matrix."""

    def __init__(self, unknown: torch.Tensor) -> None:
        self.unknown = unknown
        self.degree = _neighbour_sum(torch.ones_like(unknown[:1])).clamp_min(
            1e-12
        )  # neighbour weights in-image

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """The matrix times ``values``: degree * v minus the neighbours' weighted sum, on the unknowns."""
        return self.unknown * (self.degree * values - _neighbour_sum(self.unknown * values))

    def smooth(self, values: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """One damped Jacobi sweep towards ``apply(v) = right``."""
        return values + _DAMPING * self.unknown * (right - self.apply(values)) / self.degree


def _hierarchy(unknown: torch.Tensor) -> list[_Level]:
    """Grids halved down to a few pixels. A coarse pixel is solved for only when no pixel around its place on the
    finer grid is known, so a coarse correction never moves a value that a known pixel pins down."""
    levels = [_Level(unknown)]
    while min(levels[-1].unknown.shape[-2:]) >= _COARSEST:
        known = 1.0 - levels[-1].unknown
        levels.append(_Level(1.0 - F.max_pool2d(known, 3, stride=2, padding=1)))
    return levels


def _interpolation(like: torch.Tensor) -> torch.Tensor:
    """The bilinear interpolation kernel, one per channel of ``like``: coarse pixel ``i`` sits at fine ``2i``."""
    taps = torch.tensor([0.5, 1.0, 0.5], device=like.device, dtype=like.dtype)
    return torch.outer(taps, taps).expand(like.shape[1], 1, 3, 3)


def _restrict(values: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`_prolong`: fine residuals gathered onto the coarse grid."""
    return F.conv2d(values, _interpolation(values), stride=2, padding=1, groups=values.shape[1])


def _prolong(values: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Coarse values interpolated bilinearly onto the fine grid of ``size`` ``(h, w)``."""
    extra = tuple(fine - (2 * coarse - 1) for fine, coarse in zip(size, values.shape[-2:], strict=True))
    kernel = _interpolation(values)
    return F.conv_transpose2d(
        values, kernel, stride=2, padding=1, output_padding=extra, groups=values.shape[1]
    )


def _v_cycle(levels: list[_Level], right: torch.Tensor, depth: int = 0) -> torch.Tensor:
    """An approximate solution of level ``depth``'s system for ``right``: a symmetric multigrid V-cycle (the
    same smoothing before and after, restriction the transpose of prolongation), so it can precondition CG."""
    level = levels[depth]
    values = torch.zeros_like(right)
    if depth == len(levels) - 1:
        for _ in range(_COARSEST_SWEEPS):
            values = level.smooth(values, right)
        return values
    for _ in range(_SWEEPS):
        values = level.smooth(values, right)
    coarse = levels[depth + 1].unknown * _restrict(right - level.apply(values))
    values = values + level.unknown * _prolong(_v_cycle(levels, coarse, depth + 1), right.shape[-2:])
    for _ in range(_SWEEPS):
        values = level.smooth(values, right)
    return values


def _conjugate_gradients(levels: list[_Level], right: torch.Tensor) -> torch.Tensor:
    """Solve the finest level's system for ``right``, every image and channel at once, from zero.

    The matrix is symmetric positive definite on every region of unknowns that touches a known pixel. Each image
    and channel has its own step sizes and stops on its own once its residual is below :data:`_TOLERANCE` times its
    right-hand side's, so a result does not depend on the batch it is solved in.
    """
    dims = (2, 3)
    system = levels[0]
    limit = right.square().sum(dims, keepdim=True).sqrt() * _TOLERANCE.get(right.dtype, _DEFAULT_TOLERANCE)
    values = torch.zeros_like(right)
    residual = right
    preconditioned = _v_cycle(levels, residual)
    direction = preconditioned
    product = (residual * preconditioned).sum(dims, keepdim=True)
    active = torch.ones_like(limit)
    for _ in range(_MAX_ITERATIONS):
        norm = residual.square().sum(dims, keepdim=True).sqrt()
        active = active * (norm > limit).to(limit.dtype)
        if not bool(active.any()):
            break
        applied = system.apply(direction)
        curvature = (direction * applied).sum(dims, keepdim=True)
        step = active * torch.where(curvature > 0, product / curvature.clamp_min(1e-30), 0.0)
        values = values + step * direction
        residual = residual - step * applied
        preconditioned = _v_cycle(levels, residual)
        updated = (residual * preconditioned).sum(dims, keepdim=True)
        direction = (
            preconditioned + torch.where(product > 0, updated / product.clamp_min(1e-30), 0.0) * direction
        )
        product = updated
    return values


def _seeded_normal(images: torch.Tensor, seeds: list[int] | None) -> torch.Tensor:
    """Standard normal noise shaped like ``images``, image ``i`` drawn from a generator seeded with ``seeds[i]``."""
    seeds = seeds if seeds is not None else list(range(images.shape[0]))
    shape = images.shape[1:]
    return torch.stack(
        [
            torch.randn(
                shape, generator=generator(seed, images.device), device=images.device, dtype=images.dtype
            )
            for seed in seeds
        ]
    )
