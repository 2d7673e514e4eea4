"""Optional ``torch.compile`` of a network for training and sliding-window inference.

nnU-Net compiles its network by default on CUDA (docs/references.md, "torch.compile"), so its
measured training times are those of a compiled network. hnas compiles only when asked
(``TrainSetup.compile``, ``--compile``): compiling costs seconds to minutes at the first step of
every new network (benchmarks/README.md, "bench_compile.py"), which a search pays once per trial and
rung.

:class:`CompiledNetwork` keeps the eager module and its compiled twin side by side. They share
the parameters, so ``network.state_dict()`` (what checkpoints save) has the eager module's keys
(no ``_orig_mod.`` prefix) and loads with or without compile. ``torch.compile`` compiles lazily,
at the first call; when that fails (no C++ compiler, an operator Inductor cannot lower), the
network runs eagerly from then on, with one :class:`CompileFallbackWarning` naming the error.
"""

from __future__ import annotations

import warnings
from typing import Callable, TypeVar

import torch
from torch import nn

T = TypeVar("T")

#: The prefix ``torch.compile``'s wrapper puts before every state-dict key of the module it wraps.
COMPILED_PREFIX = "_orig_mod."


class CompileFallbackWarning(UserWarning):
    """torch.compile failed on a network, which therefore runs eagerly (slower on a GPU, same results)."""


def compile_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean compiling failed, not the network: Dynamo's (which wrap Inductor's
    backend failures) and Inductor's own C++/lowering errors (raised unwrapped by a backward
    compiled lazily at the first ``backward()``)."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor import exc as inductor

    own = tuple(getattr(inductor, name) for name in ("OperatorIssue", "InvalidCxxCompiler", "CppCompileError",
                                                      "CppWrapperCodegenError", "SubgraphLoweringException")
                if hasattr(inductor, name))
    return (TorchDynamoException, *own)


class CompiledNetwork:
    """Calls a network through ``torch.compile`` when ``enabled``, falling back to eager if compiling fails.

    ``network`` stays the eager module: move it, switch train/eval and read its state dict there;
    the compiled twin follows (its guards recompile for a new mode, shape or device).
    """

    def __init__(self, network: nn.Module, enabled: bool = False):
        self.network = network
        self.compiled: Callable | None = None
        if enabled:
            try:
                self.compiled = torch.compile(network)
            except Exception as error:  # e.g. a Python version torch.compile does not support
                self._fall_back(error)

    @property
    def is_compiled(self) -> bool:
        """Whether calls still go through the compiled network (False when off or after a fallback)."""
        return self.compiled is not None

    def __call__(self, *inputs: torch.Tensor):
        return self.run(lambda forward: forward(*inputs))

    def run(self, work: Callable[[Callable], T]) -> T:
        """``work(forward)`` with the compiled forward; if compiling fails, warn and redo ``work`` eagerly.

        ``work`` must be safe to redo after a failure inside it: a training step fails to compile
        in its forward or backward, before the optimizer step, so redoing it changes no weight twice.
        """
        if self.compiled is None:
            return work(self.network)
        try:
            return work(self.compiled)
        except compile_errors() as error:
            self._fall_back(error)
            return work(self.network)

    def _fall_back(self, error: BaseException) -> None:
        self.compiled = None
        reason = " ".join(str(error).split())[:300]
        warnings.warn(f"torch.compile failed on {type(self.network).__name__} ({type(error).__name__}: {reason}); "
                      "running it eagerly instead (same results, no compile speed-up)",
                      CompileFallbackWarning, stacklevel=4)


def forget_compiled_networks() -> None:
    """Drop the code Dynamo compiled for earlier networks before a new one trains.

    Dynamo keeps its compiled versions per Python function, and every U-Net's ``forward`` is the
    same function: each architecture, train/eval mode and input shape adds a version, and past
    ``torch._dynamo.config.recompile_limit`` (8) it silently runs that function eagerly. A search
    trains many architectures in one process, so each training starts afresh (Inductor's on-disk
    cache still spares recompiling kernels it has built before).
    """
    torch._dynamo.reset()


def uncompiled(network: nn.Module) -> nn.Module:
    """The module ``torch.compile`` wrapped (itself if it is not a compiled wrapper)."""
    return getattr(network, "_orig_mod", network)


def without_compiled_prefix(state: dict) -> dict:
    """A state dict saved from a compiled wrapper (keys ``_orig_mod.*``) with the eager module's keys."""
    if not any(isinstance(key, str) and key.startswith(COMPILED_PREFIX) for key in state):
        return state
    return {key[len(COMPILED_PREFIX):] if key.startswith(COMPILED_PREFIX) else key: value
            for key, value in state.items()}
