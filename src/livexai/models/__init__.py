"""Small demo models with weights shipped in the package (nothing is downloaded).

=========================  ==============================  ===============================================
builder                    input                           data / held-out accuracy
=========================  ==============================  ===============================================
``shapes_cnn()``           ``(N, 3, 64, 64)`` in [0, 1]    :func:`livexai.datasets.shapes`, >= 95 %
``digits_cnn()``           ``(N, 1, 8, 8)`` in [0, 1]      :func:`livexai.datasets.digits`, >= 95 %
``breast_cancer_mlp``      ``(N, 30)`` raw features        :func:`livexai.datasets.breast_cancer`, >= 93 %
``reviews_lstm()``         ``(N, T)`` int64 ids, pad 0     :func:`livexai.datasets.reviews`, >= 95 %
``reviews_transformer()``  ``(N, T)`` int64 ids, pad 0     :func:`livexai.datasets.reviews`, >= 95 %
``resnet18_like()``        ``(N, 3, H, W)``                random weights, for speed tests and demos
=========================  ==============================  ===============================================

Each builder returns an ``nn.Module`` on the CPU in eval mode; normalisation is inside the model, and the
review models ignore the pad id wherever it sits. The weights are reproduced with
``python -m livexai.models.train all``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .._inputs import check_int
from ._nets import BreastCancerMLP, DigitsCNN, ResNet18Like, ShapesCNN
from ._text_nets import ReviewsLSTM, ReviewsTransformer

__all__ = [
    "WEIGHTS_DIR",
    "BreastCancerMLP",
    "DigitsCNN",
    "ResNet18Like",
    "ReviewsLSTM",
    "ReviewsTransformer",
    "ShapesCNN",
    "breast_cancer_mlp",
    "digits_cnn",
    "resnet18_like",
    "reviews_lstm",
    "reviews_transformer",
    "shapes_cnn",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def _load(model: nn.Module, name: str, pretrained: bool) -> nn.Module:
    """Load ``weights/<name>.pt`` into ``model`` (if ``pretrained``) and return it on the CPU in eval mode."""
    if pretrained:
        path = WEIGHTS_DIR / f"{name}.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"weights for {name} not found at {path}; the package install looks incomplete. "
                f"Recreate them with: python -m livexai.models.train {name}"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()


def shapes_cnn(pretrained: bool = True) -> ShapesCNN:
    """Small CNN for :func:`livexai.datasets.shapes` (circle/square/triangle/cross), ~25k parameters.

    Input ``(N, 3, S, S)`` in [0, 1] (trained at S=64), output ``(N, 4)`` logits in
    :data:`livexai.datasets.SHAPE_CLASSES` order. Grad-CAM layer: ``"features.conv4"`` (8x8 at S=64).
    ``pretrained=False`` gives the same network untrained, e.g. for a model-randomisation sanity check.
    """
    return _load(ShapesCNN(), "shapes_cnn", pretrained)  # type: ignore[return-value]


def digits_cnn(pretrained: bool = True) -> DigitsCNN:
    """Small CNN for :func:`livexai.datasets.digits`: ``(N, 1, 8, 8)`` in [0, 1] -> ``(N, 10)`` logits.

    Grad-CAM layer: ``"features.conv3"`` (4x4). ``pretrained=False`` gives the untrained network.
    """
    return _load(DigitsCNN(), "digits_cnn", pretrained)  # type: ignore[return-value]


def breast_cancer_mlp(pretrained: bool = True) -> BreastCancerMLP:
    """MLP for :func:`livexai.datasets.breast_cancer`: raw ``(N, 30)`` rows -> ``(N, 2)`` logits.

    Class 0 is malignant, 1 benign (scikit-learn's coding). Standardisation is inside the model, so attributions
    refer to the raw features. ``pretrained=False`` gives the untrained network.
    """
    return _load(BreastCancerMLP(), "breast_cancer_mlp", pretrained)  # type: ignore[return-value]


def reviews_lstm(pretrained: bool = True) -> ReviewsLSTM:
    """Bidirectional LSTM for :func:`livexai.datasets.reviews`, ~20k parameters.

    Input ``(N, T)`` int64 token ids into :data:`livexai.datasets.REVIEW_VOCAB` (any T; pad id
    ``model.pad_token_id == 0``, ignored wherever it sits), output ``(N, 2)`` logits in
    :data:`livexai.datasets.REVIEW_CLASSES` order. The input embedding is ``model.embedding``.
    ``pretrained=False`` gives the untrained network.
    """
    return _load(ReviewsLSTM(), "reviews_lstm", pretrained)  # type: ignore[return-value]


def reviews_transformer(pretrained: bool = True) -> ReviewsTransformer:
    """Two-block transformer encoder for :func:`livexai.datasets.reviews`, ~50k parameters.

    Same input and output as :func:`reviews_lstm` (T up to 128 real tokens, learned positions); the attention
    layers are ``blocks.0.attention`` and ``blocks.1.attention`` (:class:`torch.nn.MultiheadAttention`, 4 heads),
    pads are masked as keys. ``pretrained=False`` gives the untrained network.
    """
    return _load(ReviewsTransformer(), "reviews_transformer", pretrained)  # type: ignore[return-value]


def resnet18_like(num_classes: int = 10, seed: int = 0, in_channels: int = 3) -> ResNet18Like:
    """A ResNet-18-shaped network with random weights (deterministic for ``seed``), in eval mode on the CPU.

    For speed benchmarks and "bring your own model" demos: ~11M parameters, torchvision's module names
    (``conv1``, ``bn1``, ``layer1`` .. ``layer4``, ``fc``; Grad-CAM layer ``"layer4"``). The caller's global
    random state is left untouched.
    """
    num_classes = check_int("num_classes", num_classes, 1)
    seed = check_int("seed", seed, 0)
    in_channels = check_int("in_channels", in_channels, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet18Like(num_classes=num_classes, in_channels=in_channels)
    return model.eval()
