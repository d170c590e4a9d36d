"""Superpixels for LIME and KernelSHAP: :func:`segment` cuts an image into ``K`` labelled regions ``0..K-1``.

``"slic"`` and ``"grid"`` run in torch on the image's device. SLIC's connectivity clean-up and the
``"quickshift"`` / ``"felzenszwalb"`` methods run scikit-image on the CPU (once per image, not per sample) and
move the labels back to the image's device.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from ._inputs import check_choice, check_float, check_int

METHODS = ("slic", "grid", "quickshift", "felzenszwalb")

_SLIC_OPTIONS = ("max_num_iter", "enforce_connectivity", "min_size_factor")

# Defaults lime's ImageExplainer uses for quickshift, so our superpixels match its explanations.
_QUICKSHIFT_DEFAULTS = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2}

# sRGB (D65) to CIE XYZ, and the D65 white point, as in scikit-image's rgb2lab (2-degree observer).
_RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)
# f(X), f(Y), f(Z) to L (less 16), a and b.
_F_TO_LAB = (
    (0.0, 116.0, 0.0),
    (500.0, -500.0, 0.0),
    (0.0, 200.0, -200.0),
)

# Most elements (64 MB of float32) SLIC's distance step may hold at once; past it, it takes the cells in groups.
_MAX_TEMPORARY = 2**24


def segment(
    image: Any,
    n_segments: int = 50,
    *,
    method: str = "slic",
    compactness: float = 10.0,
    **kw: Any,
) -> torch.Tensor:
    """Superpixel labels ``(H, W)`` (``torch.long``, values ``0..K-1``, every one used) for one image.

    Parameters
    ----------
    image
        A model-ready tensor ``(C, H, W)`` or ``(1, C, H, W)`` (any ``C``, normalised or not), or a display image
        ``(H, W)`` or ``(H, W, 3|4)`` (numpy arrays also ``(H, W, 1)``), uint8 or float. It is rescaled to
        ``[0, 1]`` (min to max over the whole image) first, so a normalisation changes the result little.
        3 channels are read as RGB and compared in CIELAB (like scikit-image); other channel counts are used
        directly, scaled to ``[0, 100]`` (the range of L) so one ``compactness`` suits colour and greyscale
        (scikit-image's greyscale slic with ``compactness / 100`` is the equivalent).
    n_segments
        Roughly how many segments to make (``"slic"`` and ``"grid"``; 2 to the number of pixels). 50 keeps
        features few enough for LIME / KernelSHAP to estimate with a few hundred samples while following object
        outlines on a 224x224 image. The count actually produced differs a little: report it with
        :func:`count_segments`. Quickshift and felzenszwalb ignore it: their count follows from their parameters.
    method
        ``"slic"`` (k-means in colour + position from a regular grid of seeds, in torch), ``"grid"`` (square-ish
        patches), ``"quickshift"`` (lime's default: ``kernel_size=4, max_dist=200, ratio=0.2``) or
        ``"felzenszwalb"`` (both through scikit-image on the CPU; extra keywords are passed to it).
    compactness
        SLIC only, as in scikit-image (same default): higher values weigh position more than colour, giving
        squarer segments. Colour differences are in CIELAB units (0-100); 10 suits most photographs.
    **kw
        SLIC: ``max_num_iter`` (10, as scikit-image), ``enforce_connectivity`` (True) and ``min_size_factor``
        (0.5): every segment is made one 4-connected piece, and pieces smaller than this fraction of the average
        segment join the neighbour they share the longest border with. Unlike scikit-image, a cluster broken into
        small pieces keeps its largest one, so a noisy image keeps about ``n_segments`` segments instead of
        collapsing into one. Quickshift / felzenszwalb: their scikit-image keyword arguments.

    Returns
    -------
    torch.Tensor
        ``(H, W)`` long labels on the image's device (the CPU for numpy input).
    """
    method = check_choice("method", method, METHODS)
    picture, device = _as_picture(image)
    height, width = picture.shape[1:]
    if method in ("slic", "grid"):
        n_segments = _check_n_segments(n_segments, height, width)
    if method == "grid":
        if kw:
            raise TypeError(f"method='grid' takes no extra options, got {sorted(kw)}")
        return _grid(height, width, n_segments, device)
    if method == "slic":
        compactness = check_float("compactness", compactness, 0.0, open_low=True)
        return _slic(picture, n_segments, compactness, **kw)
    return _skimage_segment(picture, method, kw).to(device)


def count_segments(segments: torch.Tensor | np.ndarray) -> int:
    """How many distinct labels ``segments`` holds (``K`` for the output of :func:`segment`)."""
    if isinstance(segments, np.ndarray):
        return int(np.unique(segments).size)
    if not isinstance(segments, torch.Tensor):
        raise TypeError(f"segments must be a tensor or numpy array of labels, got {type(segments).__name__}")
    return int(torch.unique(segments).numel())


# ----------------------------------------------------------------------------------------------------------------
# Input handling


def _as_picture(image: Any) -> tuple[torch.Tensor, torch.device]:
    """``image`` as a ``(C, H, W)`` float32 tensor in ``[0, 1]`` on its own device, and that device."""
    from_numpy = not isinstance(image, torch.Tensor)
    if from_numpy:
        try:
            image = np.asarray(image)  # numpy arrays, PIL images, nested lists
        except Exception as error:  # pragma: no cover - exotic objects
            raise TypeError(f"image must be a tensor or an array, got {type(image).__name__}") from error
        if image.dtype == object or image.dtype.kind not in "biuf":
            raise TypeError(f"image must hold real numbers, got an array of dtype {image.dtype}")
        image = np.ascontiguousarray(image)
        tensor = torch.from_numpy(image if image.flags.writeable else image.copy())  # read-only: PIL images
    else:
        tensor = image.detach()
        if tensor.is_complex():
            raise TypeError(f"image is complex ({tensor.dtype}); expected real numbers")
    shape = tuple(tensor.shape)
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    elif tensor.ndim == 4:
        if shape[0] != 1:
            raise ValueError(f"image has a batch of {shape[0]} (shape {shape}); segment one image at a time")
        tensor = tensor[0]
    elif tensor.ndim == 3:
        if _channels_last(shape, from_numpy):
            tensor = tensor[..., :3].permute(2, 0, 1)  # a display image: drop any alpha channel
    else:
        raise ValueError(
            f"image has shape {shape}; expected (C, H, W) or (1, C, H, W) (model-ready), "
            "or (H, W) / (H, W, 3) (display image)"
        )
    if tensor.numel() == 0:
        raise ValueError(f"image is empty (shape {shape})")
    picture = tensor.to(torch.float32)
    low, high = picture.amin(), picture.amax()
    if not bool(torch.isfinite(low) & torch.isfinite(high)):
        raise ValueError("image contains NaN or infinite values; expected finite numbers")
    picture = (picture - low) / (high - low).clamp_min(1e-12)
    return picture, tensor.device


def _channels_last(shape: tuple[int, ...], from_numpy: bool) -> bool:
    """Whether a 3-d image is ``(H, W, C)`` (display) rather than ``(C, H, W)`` (model-ready).

    Display images are ``(H, W, 3|4)``, or also ``(H, W, 1)`` for numpy arrays. A shape that fits both readings,
    like ``(3, H, 3)``, is a display image for numpy arrays and model-ready for tensors.
    """
    last_is_channels = shape[-1] in ((1, 3, 4) if from_numpy else (3, 4))
    if last_is_channels and shape[0] in (1, 3):
        return from_numpy and shape[-1] != 1
    return last_is_channels


def _check_n_segments(n_segments: object, height: int, width: int) -> int:
    n_pixels = height * width
    if n_pixels < 2:
        raise ValueError(f"image is {height}x{width}: it needs at least 2 pixels to be segmented")
    n_segments = check_int("n_segments", n_segments, 2)
    if n_segments > n_pixels:
        raise ValueError(
            f"n_segments={n_segments} is more than the {n_pixels} pixels of this {height}x{width} image; "
            f"expected 2 to {n_pixels}"
        )
    return n_segments


# ----------------------------------------------------------------------------------------------------------------
# Grid


def _grid_shape(height: int, width: int, n_segments: int) -> tuple[int, int]:
    """Rows x columns of a grid with about ``n_segments`` cells, each as square as the image allows.

    Minimises ``2 |log(count / n)| + |log(cell aspect ratio)|``: 50 cells on a square image give 7x7 (49 square
    cells) rather than 5x10 (50 cells twice as wide as tall).
    """
    centre = math.sqrt(n_segments * height / width)
    best: tuple[float, int, int, int] | None = None
    for rows in range(max(1, int(centre / 2)), min(height, math.ceil(centre * 2)) + 1):
        for cols in {n_segments // rows, -(-n_segments // rows)}:
            cols = min(max(cols, 1), width)
            count = rows * cols
            if count < 2:
                continue
            cost = 2 * abs(math.log(count / n_segments)) + abs(math.log((height / rows) / (width / cols)))
            candidate = (cost, abs(count - n_segments), rows, cols)
            best = candidate if best is None or candidate < best else best
    if best is None:  # pragma: no cover - unreachable for 2 <= n_segments <= height * width
        raise ValueError(f"cannot lay out {n_segments} segments on a {height}x{width} image")
    return best[2], best[3]


def _cell_index(size: int, cells: int, device: torch.device) -> torch.Tensor:
    """For each of ``size`` pixel rows (or columns), the index of its grid cell: ``(size,)`` long."""
    return torch.arange(size, device=device) * cells // size


def _grid(height: int, width: int, n_segments: int, device: torch.device) -> torch.Tensor:
    """``(H, W)`` labels of a regular grid, row-major, every label used."""
    rows, cols = _grid_shape(height, width, n_segments)
    row_of = _cell_index(height, rows, device)
    col_of = _cell_index(width, cols, device)
    return row_of[:, None] * cols + col_of[None, :]


# ----------------------------------------------------------------------------------------------------------------
# SLIC


def _rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """CIELAB ``(3, H, W)`` (L in 0..100) of sRGB ``(3, H, W)`` in ``[0, 1]``, as scikit-image's ``rgb2lab``.

    The two linear steps (sRGB-linear to XYZ over the white point; f(XYZ) to L, a, b) are matrix products, so
    the conversion is a dozen tensor operations, whatever the image size."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).pow(2.4), rgb / 12.92).reshape(3, -1)
    to_xyz = torch.tensor(_RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device)
    white = torch.tensor(_WHITE_D65, dtype=rgb.dtype, device=rgb.device)
    xyz = (to_xyz / white[:, None]) @ linear
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12).pow(1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    to_lab = torch.tensor(_F_TO_LAB, dtype=rgb.dtype, device=rgb.device)
    offset = torch.tensor((-16.0, 0.0, 0.0), dtype=rgb.dtype, device=rgb.device)
    return torch.addmm(offset[:, None], to_lab, f).view(rgb.shape)


def _slic(
    picture: torch.Tensor,
    n_segments: int,
    compactness: float,
    *,
    max_num_iter: int = 10,
    enforce_connectivity: bool = True,
    min_size_factor: float = 0.5,
    **unknown: Any,
) -> torch.Tensor:
    """SLIC labels ``(H, W)`` of ``picture`` ``(C, H, W)`` in ``[0, 1]``; see :func:`segment`."""
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)} for method='slic'; accepted: {', '.join(_SLIC_OPTIONS)}"
        )
    max_num_iter = check_int("max_num_iter", max_num_iter, 1)
    min_size_factor = check_float("min_size_factor", min_size_factor, 0.0, 1.0)
    _, height, width = picture.shape
    rows, cols = _grid_shape(height, width, n_segments)
    # As in scikit-image: distance^2 = (colour / compactness)^2 + (position / grid step)^2.
    step = max(height / rows, width / cols)
    colour = _rgb_to_lab(picture) if picture.shape[0] == 3 else picture * 100.0
    ys = torch.arange(height, device=picture.device, dtype=picture.dtype)
    xs = torch.arange(width, device=picture.device, dtype=picture.dtype)
    features = torch.cat(
        (
            colour / compactness,
            (ys / step)[None, :, None].expand(1, height, width),
            (xs / step)[None, None, :].expand(1, height, width),
        )
    ).reshape(-1, height * width)
    labels = _slic_kmeans(features, height, width, rows, cols, max_num_iter)
    if enforce_connectivity:
        min_size = int(min_size_factor * height * width / (rows * cols))
        return _connected_labels(labels, min_size)
    return torch.unique(labels, return_inverse=True)[1]


def _slic_kmeans(
    features: torch.Tensor, height: int, width: int, rows: int, cols: int, n_iter: int
) -> torch.Tensor:
    """k-means where each pixel only considers the centres seeded in its grid cell and the 8 around it.

    ``features`` ``(D, H*W)``; returns ``(H, W)`` labels (slot numbers, not contiguous). Centres sit in a
    ``(rows + 2) x (cols + 2)`` grid of slots (a border of never-seeded slots, never chosen). The pixels are laid
    out once, cell by cell, in a padded ``(cells, D, cell_h * cell_w)`` array, so the squared distances from a
    cell's pixels to its 9 candidate centres are one batched matrix product: ``|f|^2 + |c|^2 - 2 c.f``, with
    ``|f|^2`` computed once. Each iteration is about twenty small tensor operations (each a kernel launch on a
    GPU and a thread-pool barrier on a CPU), half as many as subtracting and squaring ``(D, 9, pixels)``
    differences took, and without their temporaries.
    """
    device, n_features = features.device, features.shape[0]
    rows_at, cell_h = _cell_layout(height, rows, device)
    cols_at, cell_w = _cell_layout(width, cols, device)
    block = cell_h * cell_w
    # Padded position of pixel (y, x): cell (r, c), offset (i, j) -> ((r * cols + c) * cell_h + i) * cell_w + j.
    row_part = (rows_at // cell_h) * (cols * block) + (rows_at % cell_h) * cell_w
    col_part = (cols_at // cell_w) * block + cols_at % cell_w
    padded_index = (row_part[:, None] + col_part[None, :]).reshape(-1)  # (H*W,)
    cells = rows * cols
    blocks = features.new_zeros(cells * block, n_features)
    blocks[padded_index] = features.T
    blocks = blocks.view(cells, block, n_features).transpose(1, 2).contiguous()  # (cells, D, block)
    squared_norms = blocks.square().sum(1, keepdim=True)  # (cells, 1, block)

    across = cols + 2
    cell_rows = torch.arange(1, rows + 1, device=device)
    cell_cols = torch.arange(1, cols + 1, device=device)
    home = cell_rows[:, None] * across + cell_cols  # (rows, cols): each cell's own slot
    n_slots = (rows + 2) * across
    home_of_pixel = home[:, :, None].expand(rows, cols, block).reshape(-1)[padded_index]
    shift_of_k = torch.tensor([dy * across + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], device=device)
    candidates = home.reshape(-1, 1) + shift_of_k  # (cells, 9): neighbour k is (k // 3 - 1, k % 3 - 1) away
    seeded = torch.zeros(n_slots, dtype=torch.bool, device=device)
    seeded[home.reshape(-1)] = True
    border = ~seeded[candidates]  # (cells, 9): slots outside the grid
    k_values = torch.arange(9, device=device, dtype=torch.int32).view(1, 9, 1)
    per_op = max(1, _MAX_TEMPORARY // (9 * block))  # cells per distance op, bounding its (cells, 9, block)
    with_counts = torch.cat((features, features.new_ones(1, features.shape[1])))  # sums and sizes in one pass
    labels = home_of_pixel
    centres = _cluster_means(with_counts, labels, n_slots, features.new_zeros(n_features, n_slots))
    for _ in range(n_iter):
        near = centres.T[candidates]  # (cells, 9, D)
        centre_norms = near.square().sum(2).masked_fill_(border, float("inf"))[:, :, None]
        closest = torch.cat(
            [
                _closest_candidate(
                    near[i : i + per_op],
                    blocks[i : i + per_op],
                    centre_norms[i : i + per_op],
                    squared_norms[i : i + per_op],
                    k_values,
                )
                for i in range(0, cells, per_op)
            ]
        )
        best_k = closest.reshape(-1).index_select(0, padded_index)
        previous, labels = labels, home_of_pixel + shift_of_k.index_select(0, best_k)
        if torch.equal(labels, previous):
            break  # converged: the same labels give the same centres, so every later iteration repeats this one
        centres = _cluster_means(with_counts, labels, n_slots, centres)
    return labels.view(height, width)


def _closest_candidate(
    near: torch.Tensor,
    blocks: torch.Tensor,
    centre_norms: torch.Tensor,
    pixel_norms: torch.Tensor,
    k_values: torch.Tensor,
) -> torch.Tensor:
    """For each pixel of some cells, which of its 9 candidate centres ``near`` ``(cells, 9, D)`` is nearest:
    ``(cells, block)`` int32 in 0..8 (ties go to the lower k), from the pixels ``blocks`` ``(cells, D, block)``."""
    distance = (centre_norms + pixel_norms).baddbmm_(near, blocks, alpha=-2.0).clamp_min_(0.0)
    # Argmin by packing k into the 4 lowest mantissa bits: non-negative floats order like their int32 bits, so
    # a plain minimum over the 9 keeps both the smallest distance and its k (argmin over a middle dimension ran
    # 15 times slower on a CPU).
    packed = distance.view(torch.int32).bitwise_and_(-16).bitwise_or_(k_values).amin(1)
    return packed.bitwise_and_(15)


def _cell_layout(size: int, cells: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Where each of ``size`` pixel rows lands when ``cells`` cells are padded to the same length.

    Returns ``(size,)`` long positions ``cell * length + offset in cell`` and that length (the longest cell).
    Cell ``r`` holds the rows ``y`` with ``y * cells // size == r``, as :func:`_cell_index`.
    """
    cell_of = _cell_index(size, cells, device)
    starts = (torch.arange(cells, device=device) * size + cells - 1) // cells  # first row of each cell
    length = -(-size // cells)
    return cell_of * length + torch.arange(size, device=device) - starts[cell_of], length


def _cluster_means(
    with_counts: torch.Tensor, labels: torch.Tensor, n_slots: int, previous: torch.Tensor
) -> torch.Tensor:
    """Mean feature ``(D, n_slots)`` of the pixels in each cluster; clusters left empty keep ``previous``.

    ``with_counts`` ``(D + 1, pixels)`` is the features with a row of ones, whose sums are the cluster sizes."""
    sums = with_counts.new_zeros(with_counts.shape[0], n_slots).index_add_(1, labels, with_counts)
    counts = sums[-1]
    return torch.where(counts > 0, sums[:-1] / counts.clamp_min(1.0), previous)


def _connected_labels(labels: torch.Tensor, min_size: int) -> torch.Tensor:
    """Split SLIC's ``labels`` ``(H, W)`` into 4-connected pieces, merge the fragments into neighbours (see
    :func:`_absorb_fragments`) and number the result ``0..K-1`` in raster order.

    Runs on the CPU (scikit-image's connected-component labelling), once per image.
    """
    from skimage.measure import label as connected_components

    clusters = labels.cpu().numpy()
    pieces = connected_components(clusters, background=-1, connectivity=1).astype(np.int64)
    final = _absorb_fragments(pieces, clusters, min_size)  # piece id -> surviving piece id
    survivors = np.zeros(final.size, dtype=bool)
    survivors[final[1:]] = True  # id 0 is the unused background of connected_components
    number = np.cumsum(survivors) - 1
    return torch.from_numpy(number[final][pieces]).to(labels.device)


def _absorb_fragments(pieces: np.ndarray, clusters: np.ndarray, min_size: int) -> np.ndarray:
    """The piece each connected piece ends up in, ``(n_ids,)`` (identity for kept pieces).

    ``pieces`` ``(H, W)`` numbers the connected pieces of the k-means ``clusters`` ``(H, W)`` from 1. Kept: every
    piece of at least ``min_size`` pixels, and the largest piece of every cluster of at least ``min_size`` pixels
    in all. The rest (stray fragments, tiny clusters) join the kept neighbour they share the longest border with,
    in rounds, so fragments enclosed by fragments join once their neighbours have. Unlike scikit-image, a cluster
    scattered into small pieces (noise, fine texture) keeps its largest piece, so a noisy image is not merged
    into one segment.
    """
    sizes = np.bincount(pieces.ravel())
    n_ids = sizes.size
    final = np.arange(n_ids)
    small = (sizes < min_size) & (sizes > 0)
    if not small.any():
        return final
    cluster_of = np.zeros(n_ids, dtype=np.int64)
    cluster_of[pieces.ravel()] = clusters.ravel()
    ids = np.flatnonzero(sizes)
    ids = ids[np.lexsort((-sizes[ids], cluster_of[ids]))]  # by cluster, largest piece first
    largest = ids[np.concatenate(([True], cluster_of[ids][1:] != cluster_of[ids][:-1]))]
    cluster_size = np.bincount(cluster_of[ids], weights=sizes[ids])
    small[largest[cluster_size[cluster_of[largest]] >= min_size]] = False
    if small.sum() == ids.size:  # pragma: no cover - some cluster always holds the average size or more
        small[np.argmax(sizes)] = False
    first = np.concatenate((pieces[:, :-1].ravel(), pieces[:-1, :].ravel()))
    second = np.concatenate((pieces[:, 1:].ravel(), pieces[1:, :].ravel()))
    border = (first != second) & (small[first] | small[second])
    first, second = first[border], second[border]
    source, target = np.concatenate((first, second)), np.concatenate((second, first))  # both directions
    while small.any():
        source, target = final[source], final[target]
        absorb = small[source] & ~small[target]
        if not absorb.any():  # pragma: no cover - a connected image always has a border to cross
            break
        pairs, length = np.unique(source[absorb] * n_ids + target[absorb], return_counts=True)
        piece, neighbour = pairs // n_ids, pairs % n_ids
        order = np.lexsort((-length, piece))  # by piece, longest border first
        piece, neighbour = piece[order], neighbour[order]
        best = np.concatenate(([True], piece[1:] != piece[:-1]))
        final[piece[best]] = neighbour[best]
        small[piece[best]] = False
    return final


# ----------------------------------------------------------------------------------------------------------------
# scikit-image methods


def _skimage_segment(picture: torch.Tensor, method: str, kw: dict[str, Any]) -> torch.Tensor:
    """Quickshift or felzenszwalb labels ``(H, W)`` (CPU, contiguous) of ``picture`` ``(C, H, W)`` in [0, 1].

    Greyscale is repeated to RGB (as lime does); other channel counts are passed as they are.
    """
    from skimage.segmentation import felzenszwalb, quickshift

    array = picture.permute(1, 2, 0).cpu().numpy().astype(np.float64)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if method == "quickshift":
        options = {**_QUICKSHIFT_DEFAULTS, **kw}
        if array.shape[2] != 3:
            options.setdefault("convert2lab", False)
        labels = quickshift(array, **options)
    else:
        with warnings.catch_warnings():  # it warns about any channel count but 3, which we pass on purpose
            warnings.filterwarnings("ignore", message="Got image with third dimension")
            labels = felzenszwalb(array, **kw)
    _, contiguous = np.unique(labels, return_inverse=True)
    return torch.from_numpy(contiguous.reshape(labels.shape).astype(np.int64))
