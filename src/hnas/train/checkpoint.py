"""Trial checkpoints: trainer state plus everything ``predict`` needs, loadable with weights_only=True.

Only tensors and plain values (dict, list, str, int, float, bool, None) are stored; the plan
and the network spec travel as JSON text, so loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hnas.errors import TrainingError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "hnas-checkpoint"
FORMAT_VERSION = 1


def checkpoint_path(trial_dir: str | Path) -> Path:
    return Path(trial_dir) / CHECKPOINT_NAME


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write atomically (a killed worker never leaves half a checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, temporary)
    os.replace(temporary, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint written by :func:`save_checkpoint`; a folder means its checkpoint.pt."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.is_file():
        raise TrainingError(f"checkpoint {str(path)!r} does not exist; expected a file written by hnas training")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        reason = " ".join(str(exc).split())[:200]
        raise TrainingError(f"checkpoint {str(path)!r} cannot be loaded safely ({type(exc).__name__}: {reason}); "
                            "expected a complete checkpoint file written by hnas training (is it truncated or "
                            "another program's file?)") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise TrainingError(f"{str(path)!r} is not an hnas checkpoint (no format tag {FORMAT!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise TrainingError(f"checkpoint {str(path)!r} has format version {payload.get('format_version')!r}; "
                            f"expected {FORMAT_VERSION}")
    return payload
