"""Peak memory of sliding-window inference over one large case: float32 buffers vs float16 accumulation.

One synthetic ``[1, Z, Y, X]`` case (default 100 x 256 x 256 voxels: 100 x 512 x 512 takes ~4x
longer, over 10 minutes on 2 shared cores, and every buffer scales with the voxels) goes through a
tiny untrained U-Net (2 stages, 4..8 features, 1x1x1 kernels, 16 x 64 x 64 patch: the network's
own activations stay small, so the full-volume buffers dominate) with K = 3 classes, then into a
label map, as validation does. The windows overlap by a quarter (``--overlap``; hnas and nnU-Net
use a half): the full-volume buffers do not depend on it, the run time does (3x).
Each variant runs in its own subprocess and reports the increase of its peak resident memory
(``ru_maxrss``) over what it held before the sliding window:

* ``before``: the pre-change path, restated below (:func:`legacy_scores`): the stitched scores,
  their softmax and their mean as separate float32 volumes, and an int64 argmax.
* ``float32``: :func:`hnas.train.inference.sliding_window_logits` as it runs on a CPU (float32
  accumulator, softmax in place, uint8 label map).
* ``float16``: the same with the accumulator forced to float16, which is what it uses on a GPU;
  measured on the CPU, host memory stands in for device memory.

The "buffers" column counts the full-volume tensors each path holds at its peak (model, MiB).

    python benchmarks/bench_inference_memory.py                     # 100 x 256 x 256, ~2 min on 2 cores
    python benchmarks/bench_inference_memory.py --shape 100 512 512 # the full-size slice, ~4x longer
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.inferers import sliding_window_inference  # noqa: E402

from hnas.cfgunet import build, compile_architecture  # noqa: E402
from hnas.grammar import default_architecture, make_grammar  # noqa: E402
from hnas.planning.plan import Plan  # noqa: E402
from hnas.train.inference import label_map, sliding_window_logits  # noqa: E402

VARIANTS = ("before", "float32", "float16")
MIB = 2**20


def tiny_plan(n_classes: int) -> Plan:
    """2 stages, 4..8 features, 1x1x1 kernels, a 16 x 64 x 64 patch: cheap windows with small activations
    (the network only fills the buffers; their size does not depend on it)."""
    return Plan(
        dataset_name="Dataset999_MemoryBench", dims=3, patch_size=(16, 64, 64), spacing=(1.0, 1.0, 1.0),
        median_shape=(16, 64, 64), n_stages=2, strides=((1, 1, 1), (2, 2, 2)), kernel_sizes=((1, 1, 1),) * 2,
        features_per_stage=(4, 8), conv_blocks_per_stage=(1, 1), conv_decoder_blocks_per_stage=(1,),
        residual_blocks_per_stage=(1, 1), residual_decoder_blocks_per_stage=(1,), batch_size=2,
        n_input_channels=1, n_classes=n_classes, normalization=("zscore",), base_features=4, max_features=8,
        transpose_forward=(0, 1, 2))


def tiny_network(plan: Plan) -> torch.nn.Module:
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan, dropout_rate=0.0)
    torch.manual_seed(0)
    return build(spec, torch.device("cpu"))


@torch.no_grad()
def legacy_scores(network, image: np.ndarray, patch_size, overlap: float) -> torch.Tensor:
    """The pre-change float32 path (no mirroring): the case, the stitched scores, their softmax and
    the mean each a float32 volume at once."""
    network.eval()
    network.decoder.deep_supervision = False
    volume = torch.from_numpy(np.array(image, dtype=np.float32))[None]
    logits = sliding_window_inference(volume, tuple(patch_size), 2, network, overlap=overlap, mode="gaussian")
    probabilities = torch.softmax(torch.as_tensor(logits).float(), dim=1)
    total = probabilities
    mean = total / 1
    return mean[0]


def buffers_mib(variant: str, shape, n_classes: int) -> float:
    """Full-volume tensors at each path's peak, counted (C = 1 input channel)."""
    voxels = int(np.prod(shape))
    if variant == "before":  # input + scores + softmax + mean (float32); later the mean and its int64 argmax
        return voxels * max((1 + 3 * n_classes) * 4, n_classes * 4 + 8) / MIB
    item = 2 if variant == "float16" else 4
    return voxels * (item * (1 + n_classes + 1)) / MIB  # input + scores + weight map (MONAI's count map)


def run_variant(variant: str, shape, n_classes: int, overlap: float) -> dict:
    """In this (fresh) process: the peak resident memory a variant adds, and its time."""
    plan = tiny_plan(n_classes)
    network = tiny_network(plan)
    image = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)  # no float64 peak first
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if variant == "before":
        scores = legacy_scores(network, image, plan.patch_size, overlap)
        labels = scores.argmax(0)  # int64, as validation took it
    else:
        dtype = torch.float16 if variant == "float16" else torch.float32
        scores = sliding_window_logits(network, image, plan.patch_size, torch.device("cpu"), overlap=overlap,
                                       accumulator=dtype)
        labels = label_map(scores)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "peak_increase_mib": (peak_kib - before_kib) / 1024, "seconds": seconds,
            "labels": str(labels.dtype)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(100, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--overlap", type=float, default=0.25, help="window overlap (no effect on the buffers)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(run_variant(args.worker, tuple(args.shape), args.classes, args.overlap)))
        return
    started = time.perf_counter()
    rows = []
    for variant in args.variants:
        print(f"running {variant} ...", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--worker", variant, "--classes", str(args.classes),
                   "--overlap", str(args.overlap), "--shape", *map(str, args.shape)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    z, y, x = args.shape
    print(f"## Peak memory of one {z} x {y} x {x} case ({z * y * x:,} voxels), K = {args.classes} classes, CPU, "
          f"overlap {args.overlap:g}\n")
    print("| variant | peak RSS increase (MiB) | full-volume buffers, counted (MiB) | label map | time (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['peak_increase_mib']:,.0f} | "
              f"{buffers_mib(row['variant'], args.shape, args.classes):,.0f} | {row['labels']} | "
              f"{row['seconds']:.1f} |")
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
