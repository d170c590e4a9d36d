"""Arrays to the browser as binary buffers, never JSON lists of numbers.

An array travels as a small dict ``{"data": bytes, "dtype": "float32", "shape": [H, W]}``. ipywidgets lifts
every ``bytes`` value out of a synced trait's JSON (``_remove_buffers`` walks nested dicts and lists) and sends it
as a binary buffer of the comm message; the front end (``js/widget.js``, ``decodeArray``) reads it back as a typed
array. Only three dtypes cross the wire, the three the front end understands: float32, int32 and uint8. Wider
types are narrowed first (the way jupyter-scatter's serializer casts float64 to float32 and int64 to int32).
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
import torch

# The dtypes js/widget.js decodes (see DTYPES there). Keep the two lists in step.
WIRE_DTYPES: tuple[str, ...] = ("float32", "int32", "uint8")


class WireArray(TypedDict):
    """The JSON-side shape of an array: raw little-endian bytes, dtype name and shape."""

    data: bytes
    dtype: str
    shape: list[int]


def _as_numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach()
        if array.dtype == torch.bfloat16:
            array = array.float()
        return array.to("cpu").numpy()
    return np.asarray(array)


def to_wire(array: Any, dtype: str | None = None) -> WireArray:
    """Encode a tensor or array for the browser.

    ``dtype`` forces one of :data:`WIRE_DTYPES`; by default floats become float32, booleans uint8, uint8 stays,
    and other integers become int32 (values outside int32's range are an error, not a silent wrap-around).
    """
    values = _as_numpy(array)
    if dtype is None:
        if values.dtype in (np.uint8, np.bool_):
            dtype = "uint8"
        elif np.issubdtype(values.dtype, np.integer):
            dtype = "int32"
        elif np.issubdtype(values.dtype, np.floating):
            dtype = "float32"
        else:
            raise TypeError(f"cannot send an array of dtype {values.dtype} to the browser; expected numbers")
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"dtype must be one of {WIRE_DTYPES}, got {dtype!r}")
    if dtype == "int32" and values.size and np.issubdtype(values.dtype, np.integer):
        low, high = int(values.min()), int(values.max())
        if low < np.iinfo(np.int32).min or high > np.iinfo(np.int32).max:
            raise ValueError(f"integer values {low}..{high} do not fit in int32")
    # '<' : typed arrays in the browser are little-endian on every platform that runs JupyterLab.
    encoded = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"data": encoded.tobytes(), "dtype": dtype, "shape": [int(n) for n in encoded.shape]}


def from_wire(wire: dict[str, Any]) -> np.ndarray:
    """Decode what :func:`to_wire` produced (or what the front end sent back) into a numpy array."""
    if not isinstance(wire, dict) or not {"data", "dtype", "shape"} <= wire.keys():
        raise TypeError(f"expected a dict with data, dtype and shape, got {type(wire).__name__}")
    if wire["dtype"] not in WIRE_DTYPES:
        raise ValueError(f"dtype must be one of {WIRE_DTYPES}, got {wire['dtype']!r}")
    data = wire["data"]
    raw = bytes(data) if isinstance(data, (memoryview, bytearray)) else data
    values = np.frombuffer(raw, dtype=np.dtype(wire["dtype"]).newbyteorder("<"))
    return values.reshape([int(n) for n in wire["shape"]])


def image_to_wire(image: torch.Tensor | None) -> WireArray | None:
    """A ``(H, W, 3)`` float display image in [0, 1] as uint8 RGB: a quarter of the bytes, and all a screen shows."""
    if image is None:
        return None
    pixels = (image.detach().to("cpu", torch.float32).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return to_wire(pixels, "uint8")
