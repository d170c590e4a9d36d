"""The superpixel options that LIME and KernelSHAP share, in one place, and the image features built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._call import PreparedCall
from ._features import FeatureSpace, background_images, image_fill, image_segments


@dataclass(frozen=True, eq=False)
class Superpixels:
    """How an image is cut into features and what a switched-off feature shows.

    n_segments, segmentation, segmentation_options: superpixels from :func:`livexai.segmentation.segment`, run on
    the display image ``image`` (or on ``x`` when None); ``segments`` ``(H, W)`` labels override them.
    blur_sigma: the Gaussian's sigma in pixels for a ``"blur"`` baseline (None: ``max(H, W) / 8``).
    """

    n_segments: int
    segments: Any
    segmentation: str
    segmentation_options: dict[str, Any] | None
    image: Any
    blur_sigma: float | None

    def space(self, call: PreparedCall, baseline: Any, background: Any = None) -> FeatureSpace:
        """The superpixels of ``call.x`` and their fill: reference images ``background`` ``(B, C, H, W)`` when
        given, else one ``baseline`` image (see :func:`livexai._features.image_fill`)."""
        x = call.x
        # Segment the display image if the caller gave one, else x itself (on its device).
        source = call.image if self.image is not None else x
        labels, count = image_segments(
            self.segments, source, x, self.n_segments, self.segmentation, self.segmentation_options or {}
        )
        fill = (
            background_images(background, x)
            if background is not None
            else image_fill(x, baseline, labels, self.blur_sigma)
        )
        return FeatureSpace(x=x, segments=labels, n_features=count, fill=fill)

    def params(self, space: FeatureSpace) -> dict[str, Any]:
        """What an Explanation records about the superpixels of ``space``: their count and how they were made
        (nothing for tabular rows; for a sequence, its features and their removal)."""
        if space.tokens is not None:
            return space.tokens.params()
        if space.segments is None:
            return {}
        return {
            "n_segments": space.n_features,
            "segmentation": self.segmentation if self.segments is None else "given",
        }
