"""The preprocessing cache: storage formats, parallel preprocessing, and the loader's memory.

1. **Formats.** Preprocessed cases (float32 image, int16 label) stored as ``.npy`` (the cache
   before format 2), ``np.savez_compressed`` and blosc2 NDArrays (codec x filter, chunked like
   nnU-Net's: :func:`hnas.train.preprocessing.blosc2_layout`) on three kinds of data: the real
   hippocampus cases (cropped and z-scored; 1 mm, so not resampled), a large synthetic case
   (100 x 256 x 256, z-scored) and the same case resampled in-plane (cubic, 1 -> 0.8 mm:
   100 x 320 x 320), as CT scans are. Per format: bytes per voxel (image + label), seconds to
   write, and milliseconds per random patch (open the files, read one patch of each, as the loader
   does per sample; the files are in the page cache, so this is decompression, not the disk).
2. **Workers.** ``preprocess_dataset`` of synthetic 100 x 256 x 256 cases resampled to 0.8 mm in-plane,
   with 1 and 2 processes (2 cores here), and whether both wrote the same bytes.
3. **Memory.** Resident memory gained by a process drawing training patches from 10 or 80
   hippocampus cases: the lazy loader (opens each case per sample) vs keeping every case it has
   seen decompressed in memory (what the growth would be without laziness).

    python benchmarks/bench_cache.py                 # ~3 min on 2 cores
    python benchmarks/bench_cache.py --quick         # fewer hippocampus cases and patches
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE))

import blosc2  # noqa: E402
import numpy as np  # noqa: E402

from hnas.data import crop_to_nonzero, load_dataset, read_case  # noqa: E402
from hnas.data.synthetic import synthetic_case  # noqa: E402
from hnas.train.preprocessing import (ChannelNormalization, blosc2_layout, compression,  # noqa: E402
                                      resample_image, resample_label, target_shape)

HIPPOCAMPUS_PATCH = (40, 56, 40)  # nnU-Net's 3d_fullres patch for Dataset004
LARGE_PATCH = (64, 128, 128)
LARGE_SHAPE, LARGE_SPACING, RESAMPLED_SPACING = (100, 256, 256), (3.0, 1.0, 1.0), (3.0, 0.8, 0.8)

#: codec, level, filter (None: picked per array by trial compression, as hnas and nnU-Net do)
BLOSC2 = {
    "blosc2 lz4 shuffle 5": (blosc2.Codec.LZ4, 5, blosc2.Filter.SHUFFLE),
    "blosc2 lz4hc shuffle 5": (blosc2.Codec.LZ4HC, 5, blosc2.Filter.SHUFFLE),
    "blosc2 lz4hc nofilter 5": (blosc2.Codec.LZ4HC, 5, blosc2.Filter.NOFILTER),
    "blosc2 lz4hc auto 5 (hnas, nnU-Net)": (blosc2.Codec.LZ4HC, 5, None),
    "blosc2 zstd shuffle 1": (blosc2.Codec.ZSTD, 1, blosc2.Filter.SHUFFLE),
    "blosc2 zstd auto 1": (blosc2.Codec.ZSTD, 1, None),
    "blosc2 zstd shuffle 3": (blosc2.Codec.ZSTD, 3, blosc2.Filter.SHUFFLE),
}
FORMATS = ("npy", "npz compressed", *BLOSC2)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


def hippocampus_cases(dataset: Path, n: int):
    loaded = load_dataset(dataset)
    zscore = ChannelNormalization("zscore")
    for case_id in loaded.case_ids[:n]:
        data = read_case(loaded, case_id)
        image, label, _ = crop_to_nonzero(data.image, data.label)
        yield np.stack([zscore.apply(c) for c in image]), label.astype(np.int16)


def large_case(resampled: bool):
    raw, label = synthetic_case(LARGE_SHAPE, LARGE_SPACING, np.random.default_rng(0))
    image = ChannelNormalization("zscore").apply(raw)[None]
    label = label.astype(np.int16)
    if resampled:
        shape = target_shape(LARGE_SHAPE, LARGE_SPACING, RESAMPLED_SPACING)
        image, label = resample_image(image, shape, 0), resample_label(label, shape, (0, 1, 2, 3), 0)
    return image, label


# ---------------------------------------------------------------- formats


def write(kind: str, folder: Path, name: str, image: np.ndarray, label: np.ndarray, patch) -> None:
    if kind == "npy":
        np.save(folder / f"{name}_image.npy", image)
        np.save(folder / f"{name}_label.npy", label)
    elif kind == "npz compressed":
        np.savez_compressed(folder / f"{name}.npz", image=image, label=label)
    else:
        codec, level, shuffle = BLOSC2[kind]
        for part, array in (("image", image), ("label", label)):
            blocks, chunks = blosc2_layout(array.shape, patch, array.itemsize)
            cparams = (compression(array, blocks, chunks, codec, level) if shuffle is None else
                       blosc2.CParams(codec=codec, clevel=level, filters=[shuffle], nthreads=1))
            blosc2.asarray(array, urlpath=str(folder / f"{name}_{part}.b2nd"), mode="w", chunks=chunks,
                           blocks=blocks, cparams=cparams)


def read_patch(kind: str, folder: Path, name: str, corner, patch) -> float:
    """Open one case and read one patch of image and label; returns a checksum (so nothing is skipped)."""
    window = tuple(slice(c, c + p) for c, p in zip(corner, patch))
    if kind == "npy":
        image = np.load(folder / f"{name}_image.npy", mmap_mode="r")
        label = np.load(folder / f"{name}_label.npy", mmap_mode="r")
        parts = np.array(image[(slice(None), *window)]), np.array(label[window])
    elif kind == "npz compressed":
        with np.load(folder / f"{name}.npz") as stored:
            parts = stored["image"][(slice(None), *window)], stored["label"][window]
    else:
        dparams = blosc2.DParams(nthreads=1)
        image = blosc2.open(str(folder / f"{name}_image.b2nd"), mode="r", mmap_mode="r", dparams=dparams)
        label = blosc2.open(str(folder / f"{name}_label.b2nd"), mode="r", mmap_mode="r", dparams=dparams)
        parts = image[(slice(None), *window)], label[window]
    return float(parts[0].sum()) + float(parts[1].sum())


def measure_formats(cases: list, patch, patches: int) -> dict:
    voxels = sum(label.size for _, label in cases)
    rng = np.random.default_rng(0)
    picks = []
    for _ in range(patches):
        index = int(rng.integers(len(cases)))
        shape = cases[index][1].shape
        size = [min(p, s) for p, s in zip(patch, shape)]
        picks.append((index, [int(rng.integers(0, s - p + 1)) for s, p in zip(shape, size)], size))
    rows = {}
    for kind in FORMATS:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            start = time.perf_counter()
            for index, (image, label) in enumerate(cases):
                write(kind, folder, f"case{index}", image, label, patch)
            written = time.perf_counter() - start
            size = sum(p.stat().st_size for p in folder.iterdir())
            start = time.perf_counter()
            for index, corner, window in picks:
                read_patch(kind, folder, f"case{index}", corner, window)
            reading = (time.perf_counter() - start) / patches
        rows[kind] = (size / voxels, written, reading * 1000)
        log(f"  {kind}: {size / voxels:.2f} B/voxel, write {written:.2f} s, patch {reading * 1000:.2f} ms")
    return rows


def format_table(results: dict[str, dict]) -> str:
    names = list(results)
    head = "| format | " + " | ".join(f"{n}: B/voxel | write s | patch ms" for n in names) + " |"
    lines = [head, "|---|" + "---:|" * (3 * len(names))]
    for kind in FORMATS:
        cells = []
        for name in names:
            per_voxel, written, reading = results[name][kind]
            cells += [f"{per_voxel:.2f}", f"{written:.2f}", f"{reading:.2f}"]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- workers and memory


def preprocessing_times(dataset: Path, cache: Path, workers_list, spacing=None):
    """Seconds of ``preprocess_dataset`` per number of workers, and whether all wrote the same bytes."""
    from dataclasses import replace

    from hnas.pipeline.plan import plan_for
    from hnas.train.preprocessing import preprocess_dataset

    plan = plan_for(dataset)
    plan = plan if spacing is None else replace(plan, spacing=tuple(spacing))
    rows, digests = [], {}
    for workers in workers_list:
        start = time.perf_counter()
        data = preprocess_dataset(dataset, plan, cache / f"workers{workers}", workers=workers)
        seconds = time.perf_counter() - start
        digests[workers] = _folder_digest(data.root)
        rows.append((workers, seconds, str(data.root)))
        log(f"  preprocess with {workers} workers: {seconds:.1f} s")
    return rows, len(set(digests.values())) == 1


def _folder_digest(root: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(root.iterdir()):
        if path.name == "manifest.json":
            continue
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


MEMORY_CHILD = """
import gc, json, sys
sys.path.insert(0, {src!r})
from hnas.train.loader import PatchSampler
from hnas.train.preprocessing import load_preprocessed
data = load_preprocessed({root!r})
n, mode, batches = {n}, {mode!r}, {batches}
class Eager(PatchSampler):
    cases = {{}}
    def case(self, case_id):
        if case_id not in self.cases:
            self.cases[case_id] = self.data.load(case_id)
        return self.cases[case_id]
kind = PatchSampler if mode == "lazy" else Eager
sampler = kind(data, data.case_ids[:n], {patch!r}, 2, 0.33, 0.0, 0)
def rss():
    gc.collect()
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
sampler.batch(0)
before = rss()
for index in range(1, batches):
    sampler.batch(index)
print(json.dumps({{"grown_mib": rss() - before}}))
"""


def memory_growth(root: str, n: int, mode: str, batches: int, patch) -> float:
    code = MEMORY_CHILD.format(src=str(SRC), root=root, n=n, mode=mode, batches=batches, patch=tuple(patch))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["grown_mib"]


def main() -> None:
    from real_data import add_dataset_argument, hippocampus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_argument(parser)
    parser.add_argument("--cases", type=int, default=80, help="hippocampus cases in the format table")
    parser.add_argument("--patches", type=int, default=200, help="random patches read per format")
    parser.add_argument("--batches", type=int, default=400, help="batches drawn in the memory measurement")
    parser.add_argument("--large-cases", type=int, default=4, help="synthetic cases preprocessed with 1 and 2 workers")
    parser.add_argument("--quick", action="store_true", help="20 cases, 50 patches, 100 batches, 2 large cases")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.patches, args.batches, args.large_cases = 20, 50, 100, 2
    began = time.perf_counter()
    dataset = args.dataset or hippocampus()
    real = (dataset / "dataset.json").is_file()
    results = {}
    if real:
        log(f"hippocampus ({args.cases} cases)")
        results[f"hippocampus ({args.cases} cases)"] = measure_formats(
            list(hippocampus_cases(dataset, args.cases)), HIPPOCAMPUS_PATCH, args.patches)
    for resampled in (False, True):
        image, label = large_case(resampled)
        name = f"synthetic {'x'.join(map(str, label.shape))}{' resampled' if resampled else ''}"
        log(name)
        results[name] = measure_formats([(image, label)], LARGE_PATCH, max(20, args.patches // 4))
    print(f"blosc2 {blosc2.__version__}, numpy {np.__version__}, {os.cpu_count()} cores; npy = the cache before "
          "format 2 (6 B/voxel); patch ms = open + read one patch of image and label, page cache warm\n")
    print(format_table(results))
    if not real:
        print(f"\nSKIP workers and memory: no dataset at {dataset} (set HNAS_HIPPOCAMPUS)")
        print(f"\nwall time {time.perf_counter() - began:.0f} s")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["HNAS_CACHE"] = str(tmp / "hnas")
        from hnas.data import make_synthetic_dataset

        synthetic = make_synthetic_dataset(tmp / "data", n_cases=args.large_cases, shape=LARGE_SHAPE,
                                           spacing=LARGE_SPACING, seed=0)
        log(f"preprocessing {args.large_cases} synthetic cases")
        rows, same = preprocessing_times(synthetic, tmp / "large", (1, 2), RESAMPLED_SPACING)
        print(f"\n`preprocess_dataset` of {args.large_cases} synthetic {'x'.join(map(str, LARGE_SHAPE))} cases "
              f"resampled to {RESAMPLED_SPACING} mm; the same bytes for every number of workers: {same}\n")
        print("| workers | seconds |\n|---:|---:|")
        for workers, seconds, _ in rows:
            print(f"| {workers} | {seconds:.1f} |")
        log("preprocessing the hippocampus")
        from hnas.pipeline.plan import plan_for
        from hnas.train.preprocessing import preprocess_dataset

        root = str(preprocess_dataset(dataset, plan_for(dataset), tmp / "hippocampus", workers=2).root)
        print(f"\nresident memory gained drawing {args.batches} batches of 2 patches {HIPPOCAMPUS_PATCH} (MiB, "
              "VmRSS after the first batch to after the last)\n")
        print("| cases | lazy (format 2 loader) | every case kept decompressed |\n|---:|---:|---:|")
        for n in (10, 80):
            lazy = memory_growth(root, n, "lazy", args.batches, HIPPOCAMPUS_PATCH)
            eager = memory_growth(root, n, "eager", args.batches, HIPPOCAMPUS_PATCH)
            log(f"  {n} cases: lazy {lazy:.1f} MiB, eager {eager:.1f} MiB")
            print(f"| {n} | {lazy:.1f} | {eager:.1f} |")
    print(f"\nwall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
