"""Where the benchmarks on real data find it: ``$HNAS_HIPPOCAMPUS`` or ../shared/data/Dataset004_Hippocampus.

Shared by the scripts beside it (run as scripts, they import it from their own folder). The data
is never part of the repository.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def hippocampus() -> Path:
    return Path(os.environ.get("HNAS_HIPPOCAMPUS", REPO.parent / "shared" / "data" / "Dataset004_Hippocampus"))


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, default=None, help="default: $HNAS_HIPPOCAMPUS or ../shared/...")


def dataset_or_skip(dataset: Path | None, out: Path) -> Path | None:
    """The dataset to use (None after printing SKIP when absent); caches preprocessing under ``out``."""
    dataset = dataset or hippocampus()
    if not (dataset / "dataset.json").is_file():
        print(f"SKIP: no dataset at {dataset} (set HNAS_HIPPOCAMPUS)")
        return None
    os.environ.setdefault("HNAS_CACHE", str(out / "cache"))
    return dataset
