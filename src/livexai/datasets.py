"""Small demo data sets, generated or loaded locally (nothing is downloaded).

- :func:`shapes`: synthetic RGB images of four shape classes over cluttered backgrounds, each with the ground-truth
  object mask, so an image explanation can be scored against where the evidence really is.
- :func:`reviews`: synthetic English product reviews from a small grammar, as padded token ids, with the
  rationale tokens (sentiment word, negation, intensifier) that decide each label: the text twin of ``shapes``.
- :func:`digits` and :func:`breast_cancer`: scikit-learn's bundled data sets as tensors, with a fixed train/test
  split that the shipped models (:mod:`livexai.models`) were trained on.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from . import _reviews
from ._inputs import check_choice, check_int
from ._vocab import encode

__all__ = [
    "DIGIT_CLASSES",
    "PAD_ID",
    "REVIEW_CLASSES",
    "REVIEW_LENGTH",
    "REVIEW_VOCAB",
    "SHAPE_CLASSES",
    "UNK_ID",
    "BreastCancer",
    "Digits",
    "Reviews",
    "Shapes",
    "breast_cancer",
    "decode_review",
    "digits",
    "encode_review",
    "reviews",
    "shapes",
]

SHAPE_CLASSES: list[str] = ["circle", "square", "triangle", "cross"]
DIGIT_CLASSES: list[str] = [str(d) for d in range(10)]
REVIEW_CLASSES: list[str] = ["negative", "positive"]
REVIEW_VOCAB: tuple[str, ...] = _reviews.VOCAB  # token id -> word; the same for every call of reviews()
PAD_ID, UNK_ID = REVIEW_VOCAB.index("<pad>"), REVIEW_VOCAB.index("<unk>")  # 0 and 1
REVIEW_LENGTH = _reviews.MAX_TOKENS  # T: the longest review the grammar can produce, so none is cut
_REVIEW_IDS = {word: i for i, word in enumerate(REVIEW_VOCAB)}

_SPLITS = ("train", "test", "all")
_TEST_EVERY = 5  # every 5th sample (0, 5, 10, ...) is a test sample: 20 %, independent of any RNG version
_CHUNK = (
    256  # images and reviews come in fixed chunks, each with its own generator: a prefix does not depend on n
)
_MIN_SIZE = 16


class Shapes(NamedTuple):
    """Output of :func:`shapes`.

    images: ``(N, 3, S, S)`` float32 in [0, 1]; labels: ``(N,)`` int64 indices into :data:`SHAPE_CLASSES`;
    masks: ``(N, S, S)`` bool, True on the object's pixels.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor


class Reviews(NamedTuple):
    """Output of :func:`reviews`.

    token_ids: ``(N, T)`` int64 ids into ``vocab``, each row padded at the end with :data:`PAD_ID`;
    labels: ``(N,)`` int64 indices into :data:`REVIEW_CLASSES`; rationales: ``(N, T)`` bool, True on the tokens
    that decide the label; vocab: the words by id (:data:`REVIEW_VOCAB` as a list).
    """

    token_ids: torch.Tensor
    labels: torch.Tensor
    rationales: torch.Tensor
    vocab: list[str]


class Digits(NamedTuple):
    """Output of :func:`digits`: images ``(N, 1, 8, 8)`` float32 in [0, 1], labels ``(N,)`` int64 (the digit)."""

    images: torch.Tensor
    labels: torch.Tensor


class BreastCancer(NamedTuple):
    """Output of :func:`breast_cancer`.

    x: ``(N, 30)`` float32 raw measurements (not standardised); y: ``(N,)`` int64, 0 = malignant, 1 = benign;
    feature_names: the 30 column names; class_names: ``("malignant", "benign")``.
    """

    x: torch.Tensor
    y: torch.Tensor
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------------------
# Synthetic shapes
# ---------------------------------------------------------------------------------------------------------------


def shapes(n: int, size: int = 64, seed: int = 0) -> Shapes:
    """``n`` synthetic images of a circle, square, triangle or cross, with labels and object masks.

    Each image has one object of random colour, size, position and rotation, drawn fully inside the image over a
    cluttered background: a smooth two-colour gradient, faint stripes, soft blobs (never hard-edged, so they are
    not shapes) and pixel noise (on the object too). The background is independent of the class, so only the
    object tells classes apart: a faithful explanation puts its mass inside ``masks``.

    The images are model-ready for :func:`livexai.models.shapes_cnn` (it normalises internally) and are also the
    display images. Deterministic for a ``seed``; images are generated in fixed chunks of 256, so
    ``shapes(10, seed=s)`` is the first ten images of ``shapes(1000, seed=s)``.

    Returns :class:`Shapes` ``(images (N, 3, S, S) float32 in [0, 1], labels (N,) int64, masks (N, S, S) bool)``.
    """
    n = check_int("n", n, 0)
    size = check_int("size", size, _MIN_SIZE)
    seed = check_int("seed", seed, 0)
    parts = [_shapes_chunk(_CHUNK, size, _chunk_generator(seed, i)) for i in range(math.ceil(n / _CHUNK))]
    if not parts:
        return Shapes(
            torch.zeros(0, 3, size, size),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, size, size, dtype=torch.bool),
        )
    images, labels, masks = (torch.cat(t)[:n] for t in zip(*parts, strict=True))
    return Shapes(images.contiguous(), labels.contiguous(), masks.contiguous())


def _chunk_generator(seed: int, chunk: int) -> torch.Generator:
    """A CPU generator for one chunk, seeded from ``(seed, chunk)`` so different seeds give unrelated streams."""
    mixed = (seed * 0x9E3779B97F4A7C15 + chunk * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (2**63)
    return torch.Generator().manual_seed(mixed)


def _shapes_chunk(n: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images at once: ``(n, 3, S, S)`` float32, ``(n,)`` int64, ``(n, S, S)`` bool."""

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    coords = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    yy, xx = coords.view(1, size, 1), coords.view(1, 1, size)

    background = _background(n, size, xx, yy, rand)  # (n, 3, S, S)

    labels = torch.randint(0, len(SHAPE_CLASSES), (n,), generator=g)
    radius = size * (0.13 + 0.12 * rand(n))  # half-size of the object, 8..16 px at S=64
    extent = 1.25 * radius + 1.0  # farthest object pixel from its centre, for any class and rotation
    cx = extent + rand(n) * (size - 2 * extent)
    cy = extent + rand(n) * (size - 2 * extent)
    angle = rand(n) * (2 * math.pi)
    masks = _shape_masks(labels, cx, cy, radius, angle, xx, yy)  # (n, S, S)

    colour = _contrasting_colours(background, cx, cy, rand)  # (n, 3)
    shade = 1.0 + 0.15 * (rand(n, 1, 1, 1) - 0.5) * (xx - cx.view(n, 1, 1, 1)) / radius.view(n, 1, 1, 1)
    obj = (colour.view(n, 3, 1, 1) * shade).clamp(0, 1)
    images = torch.where(masks.unsqueeze(1), obj, background)
    noise = (0.02 + 0.05 * rand(n, 1, 1, 1)) * torch.randn(n, 3, size, size, generator=g)
    images = (images + noise).clamp_(0.0, 1.0)
    return images, labels, masks


def _background(n: int, size: int, xx: torch.Tensor, yy: torch.Tensor, rand: Any) -> torch.Tensor:
    """Class-independent clutter ``(n, 3, S, S)``: colour gradient + faint stripes + soft blobs."""
    x, y = xx.unsqueeze(1), yy.unsqueeze(1)  # (1, 1, S, 1/S) broadcast against (n, 3, ...)

    def per_image(t: torch.Tensor) -> torch.Tensor:
        return t.view(n, 1, 1, 1)

    c0, c1 = rand(n, 3, 1, 1), rand(n, 3, 1, 1)
    phi = per_image(rand(n) * 2 * math.pi)
    t = (((x - size / 2) * torch.cos(phi) + (y - size / 2) * torch.sin(phi)) / size + 0.5).clamp(0, 1)
    bg = c0 + (c1 - c0) * t

    theta = per_image(rand(n) * math.pi)
    freq = per_image(2 * math.pi * (2 + 6 * rand(n)) / size)
    phase = per_image(rand(n) * 2 * math.pi)
    stripe_amp = (0.03 + 0.09 * rand(n, 3)).view(n, 3, 1, 1)
    bg = bg + stripe_amp * torch.sin(freq * (x * torch.cos(theta) + y * torch.sin(theta)) + phase)

    n_blobs = 3
    bx, by = (
        (rand(n, n_blobs) * size).view(n, n_blobs, 1, 1),
        (rand(n, n_blobs) * size).view(n, n_blobs, 1, 1),
    )
    sigma = (size * (0.04 + 0.08 * rand(n, n_blobs))).view(n, n_blobs, 1, 1)
    bump = torch.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * sigma**2))  # (n, n_blobs, S, S)
    blob_colour = rand(n, n_blobs, 3) - 0.5  # signed: blobs lighten or darken
    blob_strength = 0.5 + 0.5 * rand(n, n_blobs, 1)
    bg = bg + torch.einsum("nbc,nbhw->nchw", blob_colour * blob_strength, bump)
    return bg.clamp(0.0, 1.0)


def _shape_masks(
    labels: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    radius: torch.Tensor,
    angle: torch.Tensor,
    xx: torch.Tensor,
    yy: torch.Tensor,
) -> torch.Tensor:
    """Object masks ``(n, S, S)``: every class is rasterised for every image, then each image keeps its own."""
    n = labels.shape[0]
    cos, sin = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    dx, dy = xx - cx.view(n, 1, 1), yy - cy.view(n, 1, 1)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # object-frame coordinates
    r = radius.view(n, 1, 1)

    circle = u**2 + v**2 <= r**2
    square = torch.maximum(u.abs(), v.abs()) <= 0.85 * r
    # Equilateral triangle with circumradius 1.25 r: inside when the distance along each edge normal <= inradius.
    normals = torch.tensor([-math.pi / 2, math.pi / 6, 5 * math.pi / 6])
    along = u.unsqueeze(-1) * torch.cos(normals) + v.unsqueeze(-1) * torch.sin(normals)
    triangle = along.amax(dim=-1) <= 0.625 * r
    arm = 0.3 * r
    cross = ((u.abs() <= arm) & (v.abs() <= r)) | ((v.abs() <= arm) & (u.abs() <= r))

    every = torch.stack([circle, square, triangle, cross])  # (4, n, S, S) in SHAPE_CLASSES order
    return every[labels, torch.arange(n)]


def _contrasting_colours(
    background: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, rand: Any
) -> torch.Tensor:
    """Object colours ``(n, 3)`` that stand out from the background around the object.

    Of eight random candidates, the first whose distance to the background colour at the object's centre is at
    least 0.5 is taken (else the farthest), so colours stay varied but the object is never camouflaged.
    """
    n, _, size, _ = background.shape
    iy = cy.long().clamp(0, size - 1)
    ix = cx.long().clamp(0, size - 1)
    local = background[torch.arange(n), :, iy, ix]  # (n, 3)
    candidates = rand(n, 8, 3)
    dist = (candidates - local.unsqueeze(1)).norm(dim=-1)  # (n, 8)
    ok = dist >= 0.5
    pick = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), dist.argmax(dim=1))
    return candidates[torch.arange(n), pick]


# ---------------------------------------------------------------------------------------------------------------
# Synthetic reviews
# ---------------------------------------------------------------------------------------------------------------


def reviews(n: int, seed: int = 0) -> Reviews:
    """``n`` short synthetic product reviews as padded token ids, with labels and rationale masks.

    Each review has one or two sentiment clauses that agree with its label ("the battery is not very good",
    "i really loved the screen") and one to three neutral clauses ("it came in a black box"), in random order.
    About 30 % of sentiment clauses are negated ("not", "never"), which flips the word's polarity, so a model
    must read the negation. ``rationales`` marks exactly the sentiment words with their negation and intensifier
    ("very", "really", ...): a faithful explanation puts its mass there.

    The ids are model-ready for :func:`livexai.models.reviews_lstm` and :func:`livexai.models.reviews_transformer`.
    Deterministic for a ``seed``; reviews are generated in fixed chunks of 256, so ``reviews(10, seed=s)`` is the
    first ten reviews of ``reviews(1000, seed=s)``.

    Returns :class:`Reviews` ``(token_ids (N, T) int64, labels (N,) int64, rationales (N, T) bool, vocab)`` with
    ``T =`` :data:`REVIEW_LENGTH`.
    """
    n = check_int("n", n, 0)
    seed = check_int("seed", seed, 0)
    drawn = [
        review
        for chunk in range(math.ceil(n / _CHUNK))
        for review in _reviews_chunk(_CHUNK, _chunk_generator(seed, chunk))
    ][:n]
    token_ids = torch.full((n, REVIEW_LENGTH), PAD_ID, dtype=torch.long)
    rationales = torch.zeros(n, REVIEW_LENGTH, dtype=torch.bool)
    for i, review in enumerate(drawn):
        token_ids[i, : len(review.tokens)] = torch.tensor([_REVIEW_IDS[w] for w in review.tokens])
        rationales[i, : len(review.tokens)] = torch.tensor(review.rationale)
    labels = torch.tensor([review.label for review in drawn], dtype=torch.long)
    return Reviews(token_ids, labels, rationales, list(REVIEW_VOCAB))


def encode_review(text: str) -> torch.Tensor:
    """A sentence as token ids ``(T,)`` of the reviews' vocabulary, for the shipped text models: lower-cased, split
    into words and punctuation, unknown words as ``<unk>`` (``"Not good!"`` -> ids of ``not good <unk>``)."""
    return encode(text, REVIEW_VOCAB)


def decode_review(ids: torch.Tensor) -> str:
    """Token ids as text, padding left out: the inverse of :func:`encode_review` for known words."""
    return " ".join(REVIEW_VOCAB[i] for i in ids.reshape(-1).tolist() if i != PAD_ID)


def _reviews_chunk(n: int, g: torch.Generator) -> list[_reviews.Review]:
    """``n`` reviews, each drawn from its own row of uniforms so one review's length never shifts the next."""
    uniforms = torch.rand(n, _reviews.DRAWS_PER_REVIEW, generator=g, dtype=torch.float64)
    return [_reviews.sample_review(row) for row in uniforms.tolist()]


# ---------------------------------------------------------------------------------------------------------------
# scikit-learn's bundled data sets
# ---------------------------------------------------------------------------------------------------------------


def _sklearn_datasets() -> Any:
    try:
        from sklearn import datasets as sk_datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "livexai.datasets.digits() and breast_cancer() load scikit-learn's bundled data; "
            "install it with: pip install scikit-learn"
        ) from err
    return sk_datasets


def _split_index(n: int, split: str) -> torch.Tensor:
    """Row indices of ``split``: every 5th row (0, 5, 10, ...) is test, the rest train, ``"all"`` is everything."""
    idx = torch.arange(n)
    if split == "all":
        return idx
    is_test = idx % _TEST_EVERY == 0
    return idx[is_test] if split == "test" else idx[~is_test]


def digits(split: str = "train") -> Digits:
    """scikit-learn's 8x8 handwritten digits (1797 images) as ``(N, 1, 8, 8)`` float32 in [0, 1] and labels.

    ``split``: ``"train"`` (1437 images), ``"test"`` (360: every 5th image) or ``"all"``; the split is fixed and is
    the one :func:`livexai.models.digits_cnn` was trained and tested on. Pixel values 0..16 are divided by 16.
    """
    split = check_choice("split", split, _SPLITS)
    bunch = _sklearn_datasets().load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    idx = _split_index(len(labels), split)
    return Digits(images[idx].contiguous(), labels[idx].contiguous())


def breast_cancer(split: str = "train") -> BreastCancer:
    """scikit-learn's Wisconsin breast-cancer table (569 rows, 30 raw features) as tensors with names.

    ``split``: ``"train"`` (455 rows), ``"test"`` (114: every 5th row) or ``"all"``; fixed, and the one
    :func:`livexai.models.breast_cancer_mlp` was trained and tested on. Features are left in their raw units: the
    model standardises internally, so explanations are in the units a reader knows.
    """
    split = check_choice("split", split, _SPLITS)
    bunch = _sklearn_datasets().load_breast_cancer()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    idx = _split_index(len(y), split)
    return BreastCancer(
        x[idx].contiguous(),
        y[idx].contiguous(),
        tuple(str(f) for f in bunch.feature_names),
        tuple(str(c) for c in bunch.target_names),
    )
