"""Stand-in for torchvision: satisfies pytorch-grad-cam's imports; every function raises if called."""

from . import ops, transforms

__all__ = ["ops", "transforms"]
__version__ = "0.0.0+benchmark-stand-in"
