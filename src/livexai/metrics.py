"""Ways to compare explanations with each other and with ground truth."""

from __future__ import annotations

import torch


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions), as Spearman's correlation needs."""
    flat = values.flatten().double()
    order = torch.argsort(flat, stable=True)
    sorted_values = flat[order]
    positions = torch.arange(flat.numel(), dtype=torch.float64, device=flat.device)
    # Each run of equal values gets the mean position of the run.
    new_run = torch.ones_like(sorted_values, dtype=torch.bool)
    new_run[1:] = sorted_values[1:] != sorted_values[:-1]
    run_id = torch.cumsum(new_run.long(), 0) - 1
    run_sum = torch.zeros(int(run_id[-1]) + 1, dtype=torch.float64, device=flat.device).index_add_(
        0, run_id, positions
    )
    run_len = torch.bincount(run_id).double()
    ranks = torch.empty_like(flat)
    ranks[order] = (run_sum / run_len)[run_id]
    return ranks


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two attribution maps of the same shape (1: same ordering of pixels).

    Returns 0.0 when either map is constant (no ordering to compare).
    """
    if a.shape != b.shape:
        raise ValueError(
            f"maps must have the same shape to be compared, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    ra, rb = _ranks(a), _ranks(b.to(a.device))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator > 0 else 0.0


def segment_means(attributions: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The mean attribution over each superpixel: ``(K,)`` for a map ``(H, W)`` and labels ``(H, W)`` in ``0..K-1``.

    Puts maps of different resolutions on the same footing: a per-pixel map (GradientSHAP, saliency) ranked
    pixel by pixel against a map that is constant on superpixels (LIME, KernelSHAP) mostly compares noise with
    ties, while both averaged over the same superpixels compare what each says about each region.
    """
    if attributions.shape != segments.shape:
        raise ValueError(
            f"attributions {tuple(attributions.shape)} and segments {tuple(segments.shape)} differ in shape"
        )
    labels = segments.reshape(-1).to(attributions.device, torch.long)
    count = int(labels.max()) + 1
    values = attributions.reshape(-1).double()
    sums = torch.zeros(count, dtype=torch.float64, device=values.device).index_add_(0, labels, values)
    sizes = torch.bincount(labels, minlength=count).clamp(min=1).double()
    return (sums / sizes).to(attributions.dtype)


def mass_inside(attributions: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of the positive attribution that falls inside ``mask`` (``(H, W)`` bool), in [0, 1].

    A map spread evenly scores the mask's share of the image; a map entirely on the object scores 1. A map with no
    positive attribution scores 0.
    """
    if attributions.shape != mask.shape:
        raise ValueError(
            f"attributions {tuple(attributions.shape)} and mask {tuple(mask.shape)} differ in shape"
        )
    positive = attributions.clamp(min=0)
    total = float(positive.sum())
    return float((positive * mask.to(positive.device, positive.dtype)).sum()) / total if total > 0 else 0.0
