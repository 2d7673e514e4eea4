"""hnas: grammar-based hierarchical NAS and HPO for nnU-Net-style segmentation U-Nets."""

from hnas.errors import HnasError

__version__ = "0.1.0"

__all__ = ["HnasError", "__version__"]
