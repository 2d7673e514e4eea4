"""Derivation tree -> UNetSpec (pure data) -> nn.Module from DNA blocks; analytic cost model.

Importing this package does not import torch: specs, the compiler and the cost model are
plain Python. ``build`` and ``HnasUNet`` (torch) load on first access.
"""

from hnas.cfgunet.compiler import Network, SpecTransformer, assemble_spec, compile_architecture, spec_from_tree
from hnas.cfgunet.cost import Cost, cost
from hnas.cfgunet.spec import DecoderSpec, EncoderSpec, UNetSpec

_TORCH_EXPORTS = {"build": "hnas.cfgunet.network", "HnasUNet": "hnas.cfgunet.network",
                  "initialize_weights": "hnas.cfgunet.network"}

__all__ = [
    "Cost", "DecoderSpec", "EncoderSpec", "HnasUNet", "Network", "SpecTransformer", "UNetSpec", "assemble_spec",
    "build", "compile_architecture", "cost", "initialize_weights", "spec_from_tree",
]


def __getattr__(name):
    """Lazy torch-side exports, so `import hnas.cfgunet` stays torch-free."""
    if name in _TORCH_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_TORCH_EXPORTS[name]), name)
    raise AttributeError(f"module 'hnas.cfgunet' has no attribute {name!r}")
