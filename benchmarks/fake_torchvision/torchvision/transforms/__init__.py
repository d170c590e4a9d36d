from .._stub import missing
from . import functional

__all__ = ["Compose", "Normalize", "ToTensor", "functional"]

Compose = missing("transforms.Compose")
Normalize = missing("transforms.Normalize")
ToTensor = missing("transforms.ToTensor")
