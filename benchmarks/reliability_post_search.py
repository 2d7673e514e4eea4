"""Issue 18's cases for the reliability campaign: the post-search steps tried as a careless or hostile user would.

`hnas train --folds`, `evaluate`, `find-best` and `predict` against one small cross-validated run
folder (built once: the campaign's tiny search, then ``train --folds 0 1 --epochs 1
--iterations-per-epoch 1 --default --pareto 1`` and ``find-best``), copied per case and damaged
the way the issue lists. Four groups, each runnable alone (``reliability_campaign.py --groups
post-search``):

- ``post-search provenance``: outputs not tied to what produced them (corrupt validation files
  counted as done, mixed training settings in one model folder, a dataset path relative to the
  working directory, labels or cases changed since cross-validation, models scored on fewer cases);
- ``post-search paths``: paths read from JSON or from the folder trusted (model.json ``name``,
  best_configuration.json members outside RUN/cv, stray and foreign ``fold_*`` folders joining an
  ensemble, outputs written over the command's own inputs, evaluate over an existing metrics.csv);
- ``post-search geometry``: test labels and images whose geometry does not fit (shifted origin,
  other spacing or shape, extra label values, other labels in dataset.json, 0.01 mm and 20 mm
  voxels, pixdim 0, NaN, inf);
- ``post-search file types``: a file where a folder is expected and the reverse, and every JSON
  field of model.json, best_configuration.json, postprocessing.json and run.json with wrong types.

The campaign's verdicts apply unchanged; a case's runner (:func:`guarded`) adds what a plain
``protect=`` cannot say: which files under the run folder are the command's own outputs (evaluation/,
best_configuration.json, ...; changing anything else is ``lost``), that a refusal must come before
anything was written (else ``silent``), that a refusal names the file at fault, and checks of what
was written (a validation file still corrupt after a rerun, a stray fold that changed the ensemble's
label map). The module gets the campaign's machinery passed in (``api``: the campaign module) so
it needs no import of the script that runs it.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import os
import resource
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

PROVENANCE = "post-search provenance"
PATHS = "post-search paths"
GEOMETRY = "post-search geometry"
FILE_TYPES = "post-search file types"
GROUPS = (PROVENANCE, PATHS, GEOMETRY, FILE_TYPES)

DEFAULT = "default_1ep"  # the default configuration's model folder (1 epoch)
CASE = "synth_001"  # the image predict and the test sets use (a training case of folds 0 and 1)
MEMORY_LIMIT = 6 * 2 ** 30  # address space of a geometry case's process: a runaway resampling fails, not the machine

# what each command may write under RUN (fnmatch on the path relative to RUN): "any" = add or change,
# "added" = only new files (a changed or removed file is a loss)
OUTPUTS = {
    "train": (("cv/*", "added"), ("cv/*/model.json", "any")),  # a new fold is added to model.json
    "evaluate": (("evaluation/*", "any"),),
    "find-best": (("cv/best_configuration.json", "any"), ("cv/*/postprocessing.json", "any")),
    "predict": (),
}


# --------------------------------------------------------------------------- running


def run_in(api, campaign, argv: list[str], *, cwd: Path | None = None, timeout: float = 240.0,
           env: dict[str, str] | None = None, memory: int | None = None):
    """`python -m hnas.cli argv` as the campaign runs it, in ``cwd`` and optionally under an address-space limit."""
    def limit():
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    start = time.monotonic()
    process = subprocess.Popen([campaign.python, "-m", "hnas.cli", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=cwd or campaign.work, env=campaign.env(env or {}),
                               start_new_session=True, text=True, errors="replace", preexec_fn=limit)
    try:
        out, err = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        api._kill(process)
        out, err = process.communicate()
        code = None
    return api.Result(argv, code, out, err, time.monotonic() - start)


def _is_output(relative: str, kind: str, outputs) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) and (mode == "any" or kind == "added") for pattern, mode in outputs)


def guarded(api, *, watch: list[tuple[Path, tuple]] = (), cwd: Path | None = None,
            check: Callable[[Any], tuple[str, str] | None] | None = None, memory: int | None = None,
            names: str | None = None, folder: Path | None = None):
    """A case runner: run the command and judge what it did to the folders in ``watch``.

    ``watch`` holds ``(folder, outputs)``: a change under ``folder`` that is not one of the command's
    ``outputs`` (see OUTPUTS) is lost data; a refusal after writing outputs is silent (a refusal writes
    nothing); ``check`` judges an exit 0; ``names`` is a text a refusal's message must contain (the file at
    fault; looked for with the case's own ``folder`` cut out of the message), noted in the reason when it
    does not.
    """
    def runner(campaign, case):
        befores = [api.snapshot(watched) for watched, _ in watch]
        result = run_in(api, campaign, case.argv, cwd=cwd, timeout=case.timeout, env=case.env, memory=memory)
        lost, wrote = [], []
        for (watched, outputs), before in zip(watch, befores):
            for line in api.changes(before, api.snapshot(watched)):
                kind, relative = line.split(" ", 1)
                (wrote if _is_output(relative, kind, outputs) else lost).append(f"{kind} {watched.name}/{relative}")
        if lost:
            return result, ("lost", f"exit {result.code}; " + ", ".join(lost[:4])
                            + (f" (+{len(lost) - 4} more)" if len(lost) > 4 else ""))
        if api.has_traceback(result) or result.code not in (0, 1, 2):
            return result, None
        if result.code == 0:
            return result, (check(result) if check is not None else None)
        problem = api.FUZZ.refusal_problem(result.code, result.out, result.err)
        if problem is None and wrote:  # a refusal writes nothing, whatever the case expects
            return result, ("silent", f"refused only after writing: {', '.join(wrote[:3])}; "
                                      f"{api.last_line(result.err)}")
        if problem is None and names and names not in result.err.replace(str(folder or "\0"), ""):
            return result, ("clean error", f"{api.last_line(result.err)} [the message does not name {names!r}]")
        return result, None
    return runner


# --------------------------------------------------------------------------- file helpers


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_json(path: Path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    """Change a JSON file's content in place (``change`` edits the object it is given; its return is ignored)."""
    data = read_json(path)
    change(data)
    write_json(path, data)


def make_file(path: Path, content: bytes = b"not what hnas wrote\n") -> None:
    """Whatever is at ``path`` (file or folder) becomes a regular file."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def make_folder(path: Path) -> None:
    """Whatever is at ``path`` becomes a folder holding one user file."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("a user's file\n")


def truncate(path: Path) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def patch_pixdim(path: Path, value: float, axis: int = 1) -> None:
    """Store ``value`` as pixdim[axis] in a .nii.gz header (nibabel will not write 0, NaN or inf itself)."""
    data = bytearray(gzip.decompress(Path(path).read_bytes()))
    order = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    offset = 76 + 4 * axis  # pixdim[0..7]: float32 from byte 76
    data[offset:offset + 4] = struct.pack(f"{order}f", value)
    Path(path).write_bytes(gzip.compress(bytes(data)))


def patch_srow(path: Path, value: float) -> None:
    """Store ``value`` as srow_x[0] (sform kept active): an affine with a NaN or inf in it."""
    data = bytearray(gzip.decompress(Path(path).read_bytes()))
    order = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    data[280:284] = struct.pack(f"{order}f", value)
    data[254:256] = struct.pack(f"{order}h", 1)  # sform_code 1
    Path(path).write_bytes(gzip.compress(bytes(data)))


def nifti(path: Path, array, affine) -> Path:
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def load_nifti(path: Path):
    import nibabel as nib
    import numpy as np

    image = nib.load(str(path))
    return np.asanyarray(image.dataobj), image.affine


# --------------------------------------------------------------------------- the world


def build(api, campaign, w: dict[str, Path]) -> None:
    """The cross-validated run and the images, test sets and datasets the post-search cases draw from."""
    import numpy as np

    work = campaign.work
    root = work / "post_search"
    master = root / "cv_master"
    shutil.copytree(w["master"], master)
    steps = (["train", "--run", str(master), "--folds", "0", "1", "--epochs", "1", "--iterations-per-epoch", "1",
              "--default", "--pareto", "1"], ["find-best", "--run", str(master)])
    for argv in steps:
        result = campaign.run(argv, timeout=900)
        if result.code != 0:
            raise SystemExit(f"building the cross-validated run failed at `hnas {' '.join(argv)}` (exit "
                             f"{result.code}):\n{result.out[-2000:]}\n{result.err[-4000:]}")
    w["cv_master"] = master
    models = sorted(p.name for p in (master / "cv").iterdir() if (p / "model.json").is_file())
    if DEFAULT not in models or len(models) < 2:
        raise SystemExit(f"the cross-validated run has models {models}; expected {DEFAULT} and a trial's")
    w["cv_other"] = Path(next(m for m in models if m != DEFAULT))  # a name, kept as Path for the dict's type
    for fold in (0, 1):
        cases = sorted(p.name[: -len(".nii.gz")] for p in
                       (master / "cv" / DEFAULT / f"fold_{fold}" / "validation").glob("*.nii.gz"))
        w[f"val_case_{fold}"] = Path(cases[0])

    dataset = w["tiny"]
    image = dataset / "imagesTr" / f"{CASE}_0000.nii.gz"
    label = dataset / "labelsTr" / f"{CASE}.nii.gz"
    w["ps_image"] = Path(shutil.copy(image, _mkdir(root / "image") / image.name))
    ref = root / "ref"
    result = campaign.run(["predict", "--model", str(master / "cv" / DEFAULT), str(w["ps_image"]), "-o", str(ref)])
    if result.code != 0:
        raise SystemExit(f"the reference prediction failed (exit {result.code}):\n{result.err[-4000:]}")
    w["ref_prediction"] = ref / f"{CASE}.nii.gz"

    _scrambled_checkpoint(master / "cv" / DEFAULT / "fold_0" / "checkpoint.pt", root / "scrambled.pt")
    w["scrambled"] = root / "scrambled.pt"

    # test sets: imagesTs/labelsTs + dataset.json, one case
    w["testset_ok"] = _testset(root / "testsets" / "ok", image, label, dataset / "dataset.json")
    _testset_variants(w, root / "testsets", image, label, dataset / "dataset.json")
    _image_variants(w, root / "images", image)

    # other datasets at the run's relative dataset path: same case ids (other content, origin moved 7 mm so that
    # a prediction's header tells which dataset it came from), other ids
    from hnas.data import make_synthetic_dataset

    same = make_synthetic_dataset(root / "other_same_ids" / "tiny", n_cases=5, shape=(40, 48, 44), seed=2)
    for path in sorted(same.rglob("synth_*.nii.gz")):
        data, affine = load_nifti(path)
        affine = affine.copy()
        affine[:3, 3] += (7.0, 0.0, 0.0)
        nifti(path, np.asarray(data), affine)
    w["other_same_ids"] = root / "other_same_ids"
    other = Path(shutil.copytree(same.parent, root / "other_ids" / "tiny"))
    for path in sorted(other.rglob("synth_*.nii.gz")):
        path.rename(path.with_name(path.name.replace("synth_", "other_")))
    w["other_ids"] = root / "other_ids"
    w["tiny_relative"] = Path(os.path.relpath(dataset, work))
    if not str(w["tiny_relative"]).startswith(same.parent.name):
        raise SystemExit(f"the tiny dataset {dataset} is not below the work folder as tiny/...")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _scrambled_checkpoint(source: Path, target: Path) -> None:
    """The checkpoint with random weights: a fold that joins an ensemble changes its label map."""
    import torch

    payload = torch.load(source, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    model = {k: (torch.randn(v.shape, generator=generator) * 2.0).to(v.dtype) if v.is_floating_point() else v
             for k, v in payload["trainer"]["model"].items()}
    torch.save({**payload, "trainer": {**payload["trainer"], "model": model}}, target)


def _testset(folder: Path, image: Path, label: Path, dataset_json: Path) -> Path:
    _mkdir(folder / "imagesTs")
    _mkdir(folder / "labelsTs")
    shutil.copy(image, folder / "imagesTs" / image.name)
    shutil.copy(label, folder / "labelsTs" / label.name)
    shutil.copy(dataset_json, folder / "dataset.json")
    return folder


def _testset_variants(w, root: Path, image: Path, label: Path, dataset_json: Path) -> None:
    """Labelled test sets whose label, image or dataset.json does not fit the model or each other."""
    import numpy as np

    label_data, affine = load_nifti(label)
    image_data, image_affine = load_nifti(image)

    def variant(name: str) -> Path:
        folder = _testset(root / name, image, label, dataset_json)
        w[f"testset_{name}"] = folder
        return folder

    def label_of(folder: Path) -> Path:
        return folder / "labelsTs" / label.name

    def image_of(folder: Path) -> Path:
        return folder / "imagesTs" / image.name

    shifted = affine.copy()
    shifted[:3, 3] += (20.0, 0.0, 0.0)
    nifti(label_of(variant("label_shifted_20mm")), label_data, shifted)
    spaced = affine.copy()
    spaced[:3, :3] *= 2.0
    nifti(label_of(variant("label_spacing_2mm")), label_data, spaced)
    nifti(label_of(variant("label_smaller_shape")), label_data[::2, ::2, ::2].copy(), affine)
    nifti(label_of(variant("label_transposed")), np.ascontiguousarray(label_data.transpose(2, 1, 0)), affine)
    flipped = affine.copy()
    flipped[0, 0] = -1.0
    nifti(label_of(variant("label_flipped_axis")), label_data, flipped)
    extra = label_data.copy()
    extra[:4, :4, :4] = 5
    nifti(label_of(variant("label_extra_value_5")), extra, affine)
    negative = label_data.astype(np.int16)
    negative[:4, :4, :4] = -1
    nifti(label_of(variant("label_negative_value")), negative, affine)
    fractional = label_data.astype(np.float32)
    fractional[:4, :4, :4] = 0.5
    nifti(label_of(variant("label_fractional")), fractional, affine)
    nifti(label_of(variant("label_4d_two_volumes")), np.stack([label_data, label_data], axis=-1), affine)
    patch_pixdim(label_of(variant("label_pixdim_nan")), float("nan"))
    patch_pixdim(label_of(variant("label_pixdim_inf")), float("inf"))
    nifti(image_of(variant("image_shifted_20mm")), image_data, shifted)
    both = variant("both_shifted_20mm")  # consistent geometry: must keep working
    nifti(label_of(both), label_data, shifted)
    nifti(image_of(both), image_data, shifted)
    patch_pixdim(image_of(variant("image_pixdim_0")), 0.0)
    patch_pixdim(image_of(variant("image_pixdim_nan")), float("nan"))
    for name, labels in (("json_other_labels", {"background": 0, "tumour": 1}),
                         ("json_renamed_labels", {"background": 0, "liver": 1, "vessel": 2}),
                         ("json_more_labels", {"background": 0, "organ": 1, "substructure": 2, "edema": 3}),
                         ("json_label_values_strings", {"background": "0", "organ": "1", "substructure": "2"})):
        edit_json(variant(name) / "dataset.json", lambda d, labels=labels: d.update(labels=labels))
    tiny = variant("voxels_0.01mm")
    small = affine.copy()
    small[:3, :3] *= 0.01
    nifti(label_of(tiny), label_data, small)
    nifti(image_of(tiny), image_data, small)
    coarse = variant("voxels_20mm")
    large = affine.copy()
    large[:3, :3] *= 20.0
    nifti(label_of(coarse), label_data[::4, ::4, ::4].copy(), large)
    nifti(image_of(coarse), image_data[::4, ::4, ::4].copy(), large)
    missing = variant("label_missing")
    label_of(missing).unlink()


def _image_variants(w, root: Path, image: Path) -> None:
    """One image per geometry problem, each alone in its folder (the output name stays CASE.nii.gz)."""
    import numpy as np

    data, affine = load_nifti(image)

    def path(name: str) -> Path:
        w[f"image_{name}"] = _mkdir(root / name) / image.name
        return w[f"image_{name}"]

    for name, factor in (("voxels_0.01mm", 0.01), ("voxels_20mm", 20.0)):
        scaled = affine.copy()
        scaled[:3, :3] *= factor
        nifti(path(name), data if factor < 1 else data[::4, ::4, ::4].copy(), scaled)
    aniso = affine.copy()
    aniso[2, 2] = 8.0
    nifti(path("anisotropic_1x1x8mm"), data, aniso)
    for name, value in (("pixdim_0", 0.0), ("pixdim_nan", float("nan")), ("pixdim_inf", float("inf")),
                        ("pixdim_negative", -1.0)):
        shutil.copy(image, path(name))
        patch_pixdim(w[f"image_{name}"], value)
    for name, value in (("affine_nan", float("nan")), ("affine_inf", float("inf"))):
        shutil.copy(image, path(name))
        patch_srow(w[f"image_{name}"], value)
    nifti(path("two_dimensional"), data[:, :, 20].copy(), affine)
    nifti(path("two_channels_4d"), np.stack([data, data], axis=-1), affine)
    nifti(path("constant_zero"), np.zeros_like(data), affine)


# --------------------------------------------------------------------------- checks of what was written


def trained_with_iterations(expected: int) -> Callable:
    """After exit 0: every fold trained must have used the model's ``expected`` iterations per epoch."""
    import re

    def check(result):
        used = sorted({int(n) for n in re.findall(r"trained \d+ x (\d+) iterations", result.out)})
        if used and used != [expected]:
            return "silent", f"a fold was trained with {used} iterations per epoch into a model trained with " \
                             f"{expected} (model.json's settings mixed)"
        return None
    return check


def not_scored(run: Path, fold: str, case: str) -> Callable:
    """After exit 0 of `hnas evaluate`: metrics.csv must not score ``case`` as a validation case of ``fold``."""
    import csv

    def check(result):
        path = run / "evaluation" / "validation" / "metrics.csv"
        if not path.is_file():
            return None
        with open(path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("fold") == fold and r.get("case") == case]
        if rows and "warning" not in result.err.lower():
            return "silent", f"scored {case!r} as a validation case of fold {fold} without a warning " \
                             f"({len(rows)} rows in metrics.csv)"
        if not rows:
            return "ok", f"{case!r} left out of fold {fold}'s scores"
        return None
    return check


# --------------------------------------------------------------------------- the cases


class Cases:
    """Adds issue 18's cases to the campaign's builder; each case copies the cross-validated run when it starts."""

    def __init__(self, api, builder):
        self.api, self.b, self.w = api, builder, builder.w
        self.other = str(self.w["cv_other"])
        self.names: set[str] = set()

    # ----------------------------------------------------------------- plumbing

    def slug(self, text: str) -> str:
        base = "ps_" + "".join(c if c.isalnum() else "_" for c in text)[:90]
        name, n = base, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def add(self, group: str, name: str, argv_of: Callable[[Path], list[str]], *, expect: str = "refuse",
            mutate: Callable[[Path], None] | None = None, command: str | None = None, watch_run: bool = True,
            extra_watch: Callable[[Path], list[tuple[Path, tuple]]] | None = None,
            check_of: Callable[[Path], Callable] | None = None, cwd_of: Callable[[Path], Path] | None = None,
            names: str | None = None, memory: int | None = None, timeout: float = 240.0, weight: float = 6.0,
            fresh_dataset: bool = False) -> None:
        """One case on a private copy of the cross-validated run: ``mutate(RUN)`` damages it, ``argv_of(RUN)``.

        ``fresh_dataset`` gives the case its own copy of the dataset (RUN/../dataset, run.json pointing there)
        for cases that change it. The run folder is watched with the command's outputs (``command``,
        default argv[0]) allowed to change.
        """
        folder = self.b.folder(self.slug(name))
        run = folder / "run"
        w = self.w

        def setup():
            shutil.copytree(w["cv_master"], run, symlinks=True)
            if fresh_dataset:
                copy = Path(shutil.copytree(w["tiny"], folder / "dataset" / w["tiny"].name))
                edit_json(run / "run.json", lambda d: d.update(dataset=str(copy)))
            if mutate is not None:
                mutate(run)
        argv = argv_of(run)
        watch = [(run, OUTPUTS[command or argv[0]])] if watch_run else []
        if extra_watch is not None:
            watch += extra_watch(run)
        runner = guarded(self.api, watch=watch, cwd=cwd_of(run) if cwd_of else None,
                         check=check_of(run) if check_of else None, memory=memory, names=names, folder=folder)
        self.b.add(name=name, group=group, argv=argv, expect=expect, setup=setup, runner=runner, timeout=timeout,
                   weight=weight)

    # commands on a run copy
    @staticmethod
    def train(run: Path, folds=("0",), *extra: str) -> list[str]:
        return ["train", "--run", str(run), "--folds", *folds, "--epochs", "1", "--iterations-per-epoch", "1",
                "--default", *extra]

    @staticmethod
    def evaluate(run: Path, *extra: str) -> list[str]:
        return ["evaluate", "--run", str(run), *extra]

    def evaluate_test(self, run: Path, testset: str = "ok", *extra: str) -> list[str]:
        return ["evaluate", "--run", str(run), "--models", DEFAULT, "--test-dir", str(self.w[f"testset_{testset}"]),
                *extra]

    @staticmethod
    def find_best(run: Path) -> list[str]:
        return ["find-best", "--run", str(run)]

    def predict(self, model: Path, run: Path, image: Path | None = None, *extra: str) -> list[str]:
        return ["predict", "--model", str(model), str(image or self.w["ps_image"]), "-o", str(run.parent / "pred"),
                *extra]

    @staticmethod
    def model(run: Path, name: str = DEFAULT) -> Path:
        return run / "cv" / name

    @staticmethod
    def best(run: Path) -> Path:
        return run / "cv" / "best_configuration.json"

    def validation(self, run: Path, ending: str, fold: int = 0, model: str = DEFAULT) -> Path:
        return run / "cv" / model / f"fold_{fold}" / "validation" / f"{self.w[f'val_case_{fold}']}{ending}"

    # ----------------------------------------------------------------- checks

    def validation_repaired(self, run: Path, fold: int = 0) -> Callable:
        """After a rerun that exits 0: the damaged validation case must be readable and fit its label again."""
        def check(result):
            import nibabel as nib
            import numpy as np

            nii, npz = self.validation(run, ".nii.gz", fold), self.validation(run, ".npz", fold)
            truth = nib.load(str(self.w["tiny"] / "labelsTr" / nii.name)).shape
            try:
                shape = np.asanyarray(nib.load(str(nii)).dataobj).shape
                with np.load(npz) as stored:
                    probabilities = stored["probabilities"]
            except Exception as exc:  # anything unreadable left behind
                return "silent", f"exit 0, but the rerun kept a broken validation file as done: {type(exc).__name__}"
            if shape != truth or probabilities.shape[1:] != truth[::-1] or probabilities.shape[0] != 3 \
                    or not np.isfinite(probabilities.astype(np.float32)).all():
                return "silent", (f"exit 0, but the rerun kept a wrong validation prediction as done (label map "
                                  f"{shape}, softmax {probabilities.shape}, truth {truth})")
            return "ok", "the damaged validation case was predicted again"
        return check

    def same_as_reference(self, output: Callable[[Path], Path], what: str) -> Callable[[Path], Callable]:
        """After exit 0: the label map must equal the model's own folds' (the reference), unless a warning said why."""
        def check_of(run: Path) -> Callable:
            def check(result):
                import numpy as np

                path = output(run)
                if not path.is_file():
                    return "silent", f"exit 0 without writing {path.name}"
                if np.array_equal(load_nifti(path)[0], load_nifti(self.w["ref_prediction"])[0]):
                    return "ok", f"{what} left out (same label map as the model's own folds)"
                if "warning" in result.err.lower():
                    return None
                return "silent", f"{what} joined the ensemble without a warning (the label map differs from the " \
                                 "model's own folds')"
            return check
        return check_of

    def relative_dataset_check(self, run: Path) -> Callable:
        """After exit 0: fold 2's validation cases must be the run's own (same names, same image geometry)."""
        def check(result):
            import numpy as np

            fold = run / "cv" / DEFAULT / "fold_2" / "validation"
            found = sorted(fold.glob("*.nii.gz")) if fold.is_dir() else []
            for path in found:
                image = self.w["tiny"] / "imagesTr" / path.name.replace(".nii.gz", "_0000.nii.gz")
                if not image.is_file() or not np.allclose(load_nifti(path)[1], load_nifti(image)[1]):
                    return "silent", f"trained and validated fold 2 on another folder's dataset ({path.name} is " \
                                     "not the run's case): run.json's relative dataset path was resolved against " \
                                     "the working directory"
            if "warning" in result.err.lower():
                return None
            return "ok", f"validated on the run's cases {[p.name for p in found]}"
        return check

    # ----------------------------------------------------------------- groups

    def all(self, groups: set[str]) -> None:
        for group, make in ((PROVENANCE, self.provenance), (PATHS, self.paths), (GEOMETRY, self.geometry),
                            (FILE_TYPES, self.file_types)):
            if group in groups:
                make()

    # ................................................................. provenance

    def provenance(self) -> None:
        g = PROVENANCE
        w = self.w
        # damaged validation files: a rerun must predict them again (or refuse), find-best and evaluate must refuse
        corruptions: list[tuple[str, str, Callable[[Path], None]]] = []

        def ragged(run: Path, ending: str, how: str) -> None:
            path = self.validation(run, ending)
            if how == "truncated":
                truncate(path)
            elif how == "empty":
                path.write_bytes(b"")
            elif how == "garbage":
                path.write_bytes(self.api.FUZZ.GARBAGE)
            elif how == "missing":
                path.unlink()

        for ending in (".nii.gz", ".npz"):
            for how in ("truncated", "empty", "garbage", "missing"):
                corruptions.append((f"{how} {ending}", ending, lambda r, e=ending, h=how: ragged(r, e, h)))

        def wrong_shape_nii(run: Path) -> None:
            import numpy as np
            path = self.validation(run, ".nii.gz")
            data, affine = load_nifti(path)
            nifti(path, np.ascontiguousarray(data[::2, ::2, ::2]), affine)

        def fractional_nii(run: Path) -> None:
            import numpy as np
            path = self.validation(run, ".nii.gz")
            data, affine = load_nifti(path)
            data = data.astype(np.float32)
            data[:3, :3, :3] = 0.5
            nifti(path, data, affine)

        def npz_with(run: Path, kind: str) -> None:
            import numpy as np
            path = self.validation(run, ".npz")
            with np.load(path) as stored:
                p = stored["probabilities"]
            if kind == "key":
                np.savez_compressed(path, softmax=p)
            elif kind == "classes":
                np.savez_compressed(path, probabilities=p[:2])
            elif kind == "shape":
                np.savez_compressed(path, probabilities=np.ascontiguousarray(p[:, ::2, ::2, ::2]))
            elif kind == "nan":
                p = p.copy()
                p[:] = np.nan
                np.savez_compressed(path, probabilities=p)
            elif kind == "npy":
                with open(path, "wb") as handle:
                    np.save(handle, p)

        corruptions += [("a .nii.gz of half the shape", ".nii.gz", wrong_shape_nii),
                        ("a .nii.gz with fractional labels", ".nii.gz", fractional_nii)]
        for kind, text in (("key", "without the 'probabilities' key"), ("classes", "with 2 classes instead of 3"),
                           ("shape", "of half the spatial shape"), ("nan", "of NaN probabilities"),
                           ("npy", "that is a plain .npy")):
            corruptions.append((f"a .npz {text}", ".npz", lambda r, k=kind: npz_with(r, k)))

        repeats = ("empty .nii.gz", "empty .npz", "garbage .npz", "a .npz that is a plain .npy")  # same path as others
        for what, ending, mutate in corruptions:
            missing = what.startswith("missing")
            names = self.validation(Path("x"), ending).name
            if what not in repeats:
                self.add(g, f"train --folds 0 rerun over {what} validation file", lambda r: self.train(r),
                         expect="no-traceback", mutate=mutate, check_of=self.validation_repaired, watch_run=False)
            # find-best reads the .nii.gz of single models and the .npz of pairs (two models: both are read)
            self.add(g, f"find-best over {what} validation file", self.find_best, mutate=mutate,
                     expect="no-traceback" if missing else "refuse", names=None if missing else names)
            if ending == ".nii.gz":  # evaluate reads the label maps only
                self.add(g, f"evaluate over {what} validation file", lambda r: self.evaluate(r), mutate=mutate,
                         expect="warn" if missing else "refuse", names=None if missing else names)

        # training settings mixed into one model folder
        for fold in ("1", "2"):
            self.add(g, f"train --folds {fold} --iterations-per-epoch 2 into a model trained with 1",
                     lambda r, f=fold: ["train", "--run", str(r), "--folds", f, "--epochs", "1",
                                        "--iterations-per-epoch", "2", "--default"], weight=15)
        # without the flag the new fold may follow the model's own settings (then nothing mixes) or be refused
        self.add(g, "train --folds 2 after run.json's iterations_per_epoch changed to 3 (no flag)",
                 lambda r: ["train", "--run", str(r), "--folds", "2", "--epochs", "1", "--default"],
                 mutate=lambda r: edit_json(r / "run.json", lambda d: d.update(iterations_per_epoch=3)), weight=15,
                 expect="no-traceback", check_of=lambda r: trained_with_iterations(1))
        self.add(g, "train --folds 2 after run.json's preset changed to nnunet", lambda r: self.train(r, ("2",)),
                 mutate=lambda r: edit_json(r / "run.json", lambda d: d.update(preset="nnunet")), timeout=150,
                 weight=60)
        self.add(g, "train --folds 2 after preset.json was edited (batch size 4)", lambda r: self.train(r, ("2",)),
                 mutate=lambda r: edit_json(r / "preset.json", lambda d: d.update(batch_size=4)), weight=15,
                 expect="no-traceback")
        self.add(g, "train --folds 2 into a model.json without iterations_per_epoch", lambda r: self.train(r, ("2",)),
                 mutate=lambda r: edit_json(self.model(r) / "model.json", lambda d: d.pop("iterations_per_epoch")),
                 weight=15)

        # damaged fold checkpoints
        for how in ("truncated", "garbage"):
            def damage(run: Path, how=how) -> None:
                path = self.model(run) / "fold_0" / "checkpoint.pt"
                truncate(path) if how == "truncated" else path.write_bytes(self.api.FUZZ.GARBAGE)
            self.add(g, f"train --folds 0 rerun over a {how} fold checkpoint", lambda r: self.train(r),
                     expect="no-traceback", mutate=damage, watch_run=False, weight=15)
            self.add(g, f"predict with a model folder whose fold_0 checkpoint is {how}",
                     lambda r: self.predict(self.model(r), r), mutate=damage, names="checkpoint.pt")
            self.add(g, f"evaluate --test-dir with a {how} fold_0 checkpoint", lambda r: self.evaluate_test(r),
                     mutate=damage, names="checkpoint.pt")

        # the dataset path in run.json, relative to the working directory
        relative = str(w["tiny_relative"])

        def make_relative(run: Path) -> None:
            edit_json(run / "run.json", lambda d: d.update(dataset=relative))

        def elsewhere(kind: str) -> Callable[[Path], Path]:
            def cwd_of(run: Path) -> Path:
                return run.parent / f"cwd_{kind}"
            return cwd_of

        def stage(kind: str) -> Callable[[Path], None]:
            def mutate(run: Path) -> None:
                make_relative(run)
                cwd = run.parent / f"cwd_{kind}"
                cwd.mkdir()
                if kind != "missing":
                    (cwd / "tiny").symlink_to(w[kind] / "tiny")
            return mutate

        for kind, text in (("other_ids", "another dataset (other case ids) at the same relative path"),
                           ("other_same_ids", "another dataset (same case ids, other labels) at that path"),
                           ("missing", "nothing at that relative path")):
            missing = kind == "missing"
            self.add(g, f"train --folds 2 from another folder: {text}", lambda r: self.train(r, ("2",)),
                     mutate=stage(kind), cwd_of=elsewhere(kind), expect="refuse" if missing else "no-traceback",
                     check_of=None if missing else self.relative_dataset_check, weight=15)
            for label, argv_of in (("evaluate", lambda r: self.evaluate(r)), ("find-best", self.find_best)):
                self.add(g, f"{label} from another folder: {text}", argv_of, mutate=stage(kind),
                         cwd_of=elsewhere(kind), expect="refuse" if missing else "warn")
        self.add(g, "evaluate from the search's folder with a relative dataset in run.json",
                 lambda r: self.evaluate(r), mutate=make_relative, expect="ok")
        search_run = self.b.folder(self.slug("relative search")) / "run"

        def stored_absolute(result):
            if result.code != 0:
                return None
            stored = read_json(search_run / "run.json")["dataset"]
            if Path(stored).is_absolute():
                return "ok", "run.json's dataset is absolute"
            return "silent", f"run.json stores the dataset as {stored!r}, relative to the folder `hnas search` ran in"
        self.b.add(name="search --dataset RELATIVE stores a path that does not depend on the working folder",
                   group=g, expect="ok", weight=15, check=stored_absolute,
                   argv=self.b.tiny_search("--run-dir", str(search_run), "--max-trials", "1",
                                           dataset=w["tiny_relative"]))

        # labels and cases changed in the dataset since cross-validation
        def dataset_of(run: Path) -> Path:
            return Path(read_json(run / "run.json")["dataset"])

        def change_label(run: Path, how: str) -> None:
            import numpy as np
            data = dataset_of(run)
            path = data / "labelsTr" / f"{w['val_case_0']}.nii.gz"
            if how == "voxels":
                label, affine = load_nifti(path)
                label = label.copy()
                label[label == 2] = 1
                nifti(path, label, affine)
            elif how == "swapped":
                shutil.copy(data / "labelsTr" / f"{w['val_case_1']}.nii.gz", path)
            elif how == "shifted":
                label, affine = load_nifti(path)
                affine = affine.copy()
                affine[:3, 3] += (20.0, 0.0, 0.0)
                nifti(path, np.asarray(label), affine)
            elif how == "renamed":
                edit_json(data / "dataset.json",
                          lambda d: d.update(labels={"background": 0, "liver": 1, "vessel": 2}))
            elif how == "added":
                edit_json(data / "dataset.json", lambda d: d["labels"].update(edema=3))

        # controls for the cases below, which work on a copy of the dataset: the copy itself is no change
        for label, argv_of in (("evaluate", lambda r: self.evaluate(r)), ("find-best", self.find_best)):
            self.add(g, f"{label} after the dataset was copied elsewhere (run.json points to the identical copy)",
                     argv_of, expect="ok", fresh_dataset=True)
        for how, text in (("voxels", "a validation case's label edited (label 2 merged into 1)"),
                          ("swapped", "a validation case's label replaced by another case's"),
                          ("shifted", "a validation case's label moved 20 mm (affine origin)"),
                          ("renamed", "dataset.json's labels renamed"),
                          ("added", "dataset.json gained a label")):
            for label, argv_of in (("evaluate", lambda r: self.evaluate(r)), ("find-best", self.find_best)):
                # renamed labels (same values) change no score: the new names may simply be used
                self.add(g, f"{label} after {text} since cross-validation", argv_of,
                         expect="no-traceback" if how == "renamed" else "warn",
                         mutate=lambda r, h=how: change_label(r, h), fresh_dataset=True)

        def change_cases(run: Path, how: str) -> None:
            data = dataset_of(run)
            if how == "added":
                shutil.copy(data / "imagesTr" / "synth_002_0000.nii.gz", data / "imagesTr" / "synth_005_0000.nii.gz")
                shutil.copy(data / "labelsTr" / "synth_002.nii.gz", data / "labelsTr" / "synth_005.nii.gz")
                edit_json(data / "dataset.json", lambda d: d.update(numTraining=6))
            elif how == "removed":
                (data / "imagesTr" / f"{w['val_case_1']}_0000.nii.gz").unlink()
                (data / "labelsTr" / f"{w['val_case_1']}.nii.gz").unlink()
                edit_json(data / "dataset.json", lambda d: d.update(numTraining=4))
            elif how == "renamed":
                (data / "imagesTr" / "synth_002_0000.nii.gz").rename(data / "imagesTr" / "synth_009_0000.nii.gz")
                (data / "labelsTr" / "synth_002.nii.gz").rename(data / "labelsTr" / "synth_009.nii.gz")

        for how, text in (("added", "a case added to the dataset (the fold split moved)"),
                          ("removed", "a validation case removed from the dataset"),
                          ("renamed", "a training case renamed (the fold split moved)")):
            mutate = (lambda h: lambda r: change_cases(r, h))(how)
            self.add(g, f"evaluate after {text}", lambda r: self.evaluate(r), expect="warn", mutate=mutate,
                     fresh_dataset=True)
            self.add(g, f"find-best after {text}", self.find_best, expect="warn", mutate=mutate, fresh_dataset=True)
            self.add(g, f"train --folds 2 after {text}", lambda r: self.train(r, ("2",)), mutate=mutate,
                     fresh_dataset=True, weight=15)

        # a model scored on fewer cases than the others
        other = self.other

        def fewer(run: Path, how: str) -> None:
            if how == "record":
                edit_json(self.model(run, other) / "model.json", lambda d: d.update(folds=[0]))
            else:
                self.validation(run, ".nii.gz", fold=1, model=other).unlink()

        for how, text in (("record", "a model whose model.json lists fold 0 only (fold_1 still on disk)"),
                          ("file", "a model whose fold 1 label map is missing (softmax kept)")):
            self.add(g, f"evaluate: {text}", lambda r: self.evaluate(r), expect="warn",
                     mutate=lambda r, h=how: fewer(r, h))
            self.add(g, f"find-best: {text}", self.find_best, expect="no-traceback",
                     mutate=lambda r, h=how: fewer(r, h))

        # validation folders holding cases that are not the fold's
        def stray(run: Path, how: str) -> None:
            folder = self.model(run) / "fold_0" / "validation"
            source = self.validation(run, ".nii.gz", fold=1)
            target = {"other_fold": source.name, "unknown": "notes.nii.gz", "training": f"{CASE}.nii.gz"}[how]
            shutil.copy(source, folder / target)
            shutil.copy(self.validation(run, ".npz", fold=1), folder / target.replace(".nii.gz", ".npz"))

        # evaluate may leave such a file out (scoring the fold's own cases), warn, or refuse; never score it as fold 0's
        for how, text, case in (("other_fold", "fold 1's validation case copied into fold 0's validation folder",
                                 str(w["val_case_1"])),
                                ("unknown", "a label map of an unknown case in a validation folder", "notes"),
                                ("training", "a training case's label map in a validation folder", CASE)):
            self.add(g, f"evaluate: {text}", lambda r: self.evaluate(r), expect="warn",
                     mutate=lambda r, h=how: stray(r, h), check_of=lambda r, c=case: not_scored(r, "0", c))
        self.add(g, "find-best: a label map of an unknown case in a validation folder", self.find_best,
                 expect="no-traceback", mutate=lambda r: stray(r, "unknown"))

    # ................................................................. paths

    def paths(self) -> None:
        g = PATHS
        w = self.w
        other = self.other

        # model.json's name: used to name the evaluation's prediction folder
        def victim(run: Path) -> Path:
            return run.parent / "victim"

        def named(value) -> Callable[[Path], None]:
            def mutate(run: Path) -> None:
                folder = victim(run)
                folder.mkdir()
                (folder / f"{CASE}.nii.gz").write_bytes(b"a user's file that must survive\n")
                if value == "ABSOLUTE":
                    name = str(folder)
                else:
                    name = value
                edit_json(self.model(run) / "model.json", lambda d: d.update(name=name))
            return mutate

        for value, text in (("../../../../victim", "'../../../../victim'"), ("ABSOLUTE", "an absolute path"),
                            ("sub/dir", "'sub/dir'"), ("trial_00999_1ep", "another model's name")):
            # the name may be refused or ignored (the folder's own name used); never a path to write to
            self.add(g, f"evaluate --test-dir with model.json name {text}", lambda r: self.evaluate_test(r),
                     mutate=named(value), expect="no-traceback", extra_watch=lambda r: [(victim(r), ())])
            self.add(g, f"evaluate (validation) with model.json name {text}", lambda r: self.evaluate(r),
                     mutate=named(value), expect="no-traceback", extra_watch=lambda r: [(victim(r), ())])

        # best_configuration.json members outside RUN/cv
        def outside(run: Path) -> Path:
            return run.parent / "outside_model"

        def members(value: Callable[[Path], list]) -> Callable[[Path], None]:
            def mutate(run: Path) -> None:
                shutil.copytree(self.model(run), outside(run))
                (run / "cv" / "linked").symlink_to(outside(run), target_is_directory=True)
                (run / "cv" / "alias").symlink_to(DEFAULT, target_is_directory=True)
                edit_json(self.best(run), lambda d: d["best"].update(members=value(run)))
            return mutate

        for text, value, expect in (
                ("'../../outside_model'", lambda r: ["../../outside_model"], "refuse"),
                ("an absolute path outside the run", lambda r: [str(outside(r))], "refuse"),
                ("a symlink in cv/ to a model outside the run", lambda r: ["linked"], "refuse"),
                ("a good member and '../../outside_model'", lambda r: [DEFAULT, "../../outside_model"], "refuse"),
                ("'.' (cv itself)", lambda r: ["."], "refuse"),
                ("'' (empty)", lambda r: [""], "refuse"),
                ("a fold folder 'default_1ep/fold_0'", lambda r: [f"{DEFAULT}/fold_0"], "refuse"),
                ("a model that does not exist", lambda r: ["trial_00999_1ep"], "refuse"),
                ("the same model twice", lambda r: [DEFAULT, DEFAULT], "no-traceback"),
                ("a symlink in cv/ to a model in cv/", lambda r: ["alias"], "no-traceback")):
            self.add(g, f"predict with best_configuration.json members {text}",
                     lambda r: self.predict(self.best(r), r), mutate=members(value), expect=expect,
                     names="best_configuration.json" if expect == "refuse" else None)

        # stray and foreign fold folders joining an ensemble
        def best_is_default(run: Path) -> None:
            decision = run / "cv" / DEFAULT / "postprocessing.json"
            edit_json(self.best(run), lambda d: d.update(
                best={**d["best"], "name": DEFAULT, "members": [DEFAULT]},
                postprocessing=read_json(decision) if decision.is_file() else None))

        def stray_fold(name: str, foreign: bool = False) -> Callable[[Path], None]:
            def mutate(run: Path) -> None:
                best_is_default(run)
                model = self.model(run)
                if foreign:
                    shutil.copy(self.model(run, other) / "fold_1" / "checkpoint.pt", model / "fold_1" / "checkpoint.pt")
                    return
                folder = model / name
                folder.mkdir()
                shutil.copy(w["scrambled"], folder / "checkpoint.pt")
            return mutate

        outputs = {"predict --model RUN/cv/default_1ep": (lambda r: self.predict(self.model(r), r),
                                                          lambda r: r.parent / "pred" / f"{CASE}.nii.gz"),
                   "predict --model best_configuration.json": (lambda r: self.predict(self.best(r), r),
                                                               lambda r: r.parent / "pred" / f"{CASE}.nii.gz"),
                   "evaluate --test-dir": (lambda r: self.evaluate_test(r),
                                           lambda r: r / "evaluation" / "test_ok" / "predictions" / DEFAULT /
                                           f"{CASE}.nii.gz")}
        for name, text in (("fold_7", "a stray fold_7 (no such fold)"),
                           ("fold_00", "a stray fold_00 (a second fold 0)"),
                           ("fold_2", "a fold_2 that model.json does not list"),
                           ("fold_x", "a stray fold_x (control: never a fold)")):
            for label, (argv_of, output) in outputs.items():
                self.add(g, f"{label} with {text} holding another checkpoint", argv_of, mutate=stray_fold(name),
                         expect="warn", check_of=self.same_as_reference(output, name))
        for label, (argv_of, _) in outputs.items():
            self.add(g, f"{label} whose fold_1 holds another model's checkpoint", argv_of,
                     mutate=stray_fold("fold_1", foreign=True), names="fold_1")
        self.add(g, "train --folds 1 rerun over a fold_1 holding another model's checkpoint",
                 lambda r: self.train(r, ("1",)), mutate=stray_fold("fold_1", foreign=True), names="fold_1")

        # predict writing over its own inputs
        def image_folder(run: Path) -> Path:
            return run.parent / "scans"

        def scans(run: Path, name: str = "scan.nii.gz", link: bool = False) -> None:
            folder = image_folder(run)
            folder.mkdir()
            shutil.copy(w["ps_image"], folder / name)
            if link:
                (run.parent / "scans_link").symlink_to(folder, target_is_directory=True)

        def scan_argv(run: Path, out: Path, name: str = "scan.nii.gz", *extra: str) -> list[str]:
            return ["predict", "--model", str(self.model(run)), str(image_folder(run) / name), "-o", str(out), *extra]

        protect_scans = lambda r: [(image_folder(r), ())]  # noqa: E731
        self.add(g, "predict -o <the input folder> --overwrite (image scan.nii.gz would be replaced)",
                 lambda r: scan_argv(r, image_folder(r), "scan.nii.gz", "--overwrite"), mutate=scans,
                 extra_watch=protect_scans)
        self.add(g, "predict -o <the input folder> without --overwrite", lambda r: scan_argv(r, image_folder(r)),
                 mutate=scans, extra_watch=protect_scans)
        self.add(g, "predict -o <the input folder spelled with /./> --overwrite",
                 lambda r: scan_argv(r, image_folder(r) / ".", "scan.nii.gz", "--overwrite"), mutate=scans,
                 extra_watch=protect_scans)
        self.add(g, "predict -o <a symlink to the input folder> --overwrite",
                 lambda r: scan_argv(r, r.parent / "scans_link", "scan.nii.gz", "--overwrite"),
                 mutate=lambda r: scans(r, link=True), extra_watch=protect_scans)
        self.add(g, "predict IMAGE --model M -o <IMAGE's folder> --overwrite (image before --model)",
                 lambda r: ["predict", str(image_folder(r) / "scan.nii.gz"), "--model", str(self.model(r)), "-o",
                            str(image_folder(r)), "--overwrite"], mutate=scans, extra_watch=protect_scans)
        self.add(g, "predict -o <the input folder> with a _0000 image (no name clash)",
                 lambda r: scan_argv(r, image_folder(r), f"{CASE}_0000.nii.gz"), expect="no-traceback",
                 mutate=lambda r: scans(r, f"{CASE}_0000.nii.gz"),
                 extra_watch=lambda r: [(image_folder(r), (("*.nii.gz", "added"),))])

        def into_validation(run: Path) -> None:
            scans(run, f"{w['val_case_0']}.nii.gz")

        self.add(g, "predict -o <the model's own fold_0/validation> --overwrite",
                 lambda r: scan_argv(r, self.model(r) / "fold_0" / "validation", f"{w['val_case_0']}.nii.gz",
                                     "--overwrite"), mutate=into_validation, command="predict")

        def linked_output(run: Path) -> None:
            scans(run)
            out = run.parent / "pred"
            out.mkdir()
            (out / "scan.nii.gz").symlink_to(image_folder(run) / "scan.nii.gz")

        self.add(g, "predict --overwrite where the output file is a symlink to the input image",
                 lambda r: scan_argv(r, r.parent / "pred", "scan.nii.gz", "--overwrite"), mutate=linked_output,
                 expect="no-traceback", extra_watch=protect_scans)

        # evaluate -o over existing results (predict's rule: refuse without --overwrite)
        def results(run: Path) -> Path:
            return run.parent / "results"

        def existing(what: str) -> Callable[[Path], None]:
            def mutate(run: Path) -> None:
                folder = results(run)
                folder.mkdir()
                if what == "metrics":
                    (folder / "metrics.csv").write_text("model,fold,case,class,dice,hd95\nmine,0,a,b,1.0,0.0\n")
                elif what == "summary":
                    (folder / "summary.json").write_text('{"mine": true}\n')
                elif what == "link":
                    mine = run.parent / "mine"
                    mine.mkdir()
                    (mine / "thesis_table.csv").write_text("a user's table\n")
                    (folder / "metrics.csv").symlink_to(mine / "thesis_table.csv")
                elif what == "predictions":
                    target = folder / "predictions" / DEFAULT
                    target.mkdir(parents=True)
                    (target / f"{CASE}.nii.gz").write_bytes(b"an earlier prediction\n")
            return mutate

        watch_results = lambda r: [(results(r), ())]  # noqa: E731
        self.add(g, "evaluate -o DIR over an existing metrics.csv (no --overwrite)",
                 lambda r: self.evaluate(r, "-o", str(results(r))), mutate=existing("metrics"),
                 extra_watch=watch_results, names="metrics.csv")
        self.add(g, "evaluate -o DIR over an existing summary.json (no --overwrite)",
                 lambda r: self.evaluate(r, "-o", str(results(r))), mutate=existing("summary"),
                 extra_watch=watch_results, names="summary.json")
        self.add(g, "evaluate -o DIR whose metrics.csv is a symlink to a user's file (no --overwrite)",
                 lambda r: self.evaluate(r, "-o", str(results(r))), mutate=existing("link"),
                 extra_watch=lambda r: [(r.parent / "mine", ())])
        self.add(g, "evaluate --test-dir -o DIR over an existing prediction (no --overwrite)",
                 lambda r: self.evaluate_test(r, "ok", "-o", str(results(r))), mutate=existing("predictions"),
                 extra_watch=watch_results)
        self.add(g, "evaluate -o DIR --overwrite over an existing metrics.csv", expect="ok",
                 argv_of=lambda r: self.evaluate(r, "-o", str(results(r)), "--overwrite"), mutate=existing("metrics"))
        self.add(g, "evaluate -o <a regular file>", lambda r: self.evaluate(r, "-o", str(w["file"])))
        self.add(g, "evaluate rerun into its default folder (an earlier evaluation there)",
                 lambda r: self.evaluate(r), expect="no-traceback",
                 mutate=lambda r: _mkdir(r / "evaluation" / "validation").joinpath("metrics.csv").write_text("x\n"))

        # find-best and train writing through symlinks
        def linked_best(run: Path, which: str) -> None:
            mine = run.parent / "mine"
            mine.mkdir()
            (mine / "notes.json").write_text('{"a user": "file"}\n')
            path = self.best(run) if which == "best" else self.model(run) / "postprocessing.json"
            for model in (DEFAULT, other):  # the decision goes to whichever model wins
                if which != "best":
                    p = self.model(run, model) / "postprocessing.json"
                    p.unlink(missing_ok=True)
                    p.symlink_to(mine / "notes.json")
            if which == "best":
                path.unlink()
                path.symlink_to(mine / "notes.json")

        for which, text in (("best", "best_configuration.json"), ("pp", "postprocessing.json")):
            # --top 1: a single best model, so that its postprocessing.json is written
            self.add(g, f"find-best --top 1 where {text} is a symlink to a user's file",
                     lambda r: self.find_best(r) + ["--top", "1"],
                     expect="no-traceback", mutate=lambda r, x=which: linked_best(r, x),
                     extra_watch=lambda r: [(r.parent / "mine", ())])

        def validation_link(run: Path, how: str) -> None:
            data = Path(read_json(run / "run.json")["dataset"])
            nii, npz = self.validation(run, ".nii.gz"), self.validation(run, ".npz")
            if how == "file":
                nii.unlink()
                npz.unlink()
                nii.symlink_to(data / "labelsTr" / nii.name)
            else:
                shutil.rmtree(nii.parent)
                nii.parent.symlink_to(data / "labelsTr", target_is_directory=True)

        for how, text in (("file", "validation/<case>.nii.gz is a symlink to the dataset's label (softmax missing)"),
                          ("folder", "validation/ is a symlink to the dataset's labelsTr")):
            self.add(g, f"train --folds 0 rerun where {text}", lambda r: self.train(r), expect="no-traceback",
                     mutate=lambda r, h=how: validation_link(r, h), fresh_dataset=True, watch_run=False,
                     extra_watch=lambda r: [(r.parent / "dataset", ())])

    # ................................................................. geometry

    def geometry(self) -> None:
        g = GEOMETRY
        w = self.w
        # images at predict
        images = (("voxels_0.01mm", "0.01 mm voxels", "warn"), ("voxels_20mm", "20 mm voxels", "warn"),
                  ("pixdim_0", "pixdim 0", "warn"), ("pixdim_nan", "pixdim NaN", "refuse"),
                  ("pixdim_inf", "pixdim inf", "refuse"), ("pixdim_negative", "pixdim -1", "no-traceback"),
                  ("affine_nan", "a NaN in the affine (sform)", "refuse"),
                  ("affine_inf", "an inf in the affine (sform)", "refuse"),
                  ("anisotropic_1x1x8mm", "1 x 1 x 8 mm voxels", "no-traceback"),
                  ("two_dimensional", "a 2D image", "refuse"), ("two_channels_4d", "a 4D image of 2 channels",
                                                                 "refuse"),
                  ("constant_zero", "an all-zero image", "no-traceback"))
        for key, text, expect in images:
            slow = key == "voxels_20mm"
            for label, model in (("a model folder", lambda r: self.model(r)), ("best_configuration.json", self.best)):
                if label != "a model folder" and key not in ("voxels_0.01mm", "pixdim_0", "pixdim_nan"):
                    continue  # the same reading of the image; a few through best_configuration.json suffice
                self.add(g, f"predict ({label}) an image with {text}",
                         lambda r, m=model, k=key: self.predict(m(r), r, w[f"image_{k}"]), expect=expect,
                         memory=MEMORY_LIMIT, timeout=60 if slow else 240, weight=60 if slow else 6)
        # labelled test sets at evaluate --test-dir
        tests = (("label_shifted_20mm", "a label shifted 20 mm from its image", "warn"),
                 ("label_spacing_2mm", "a label with 2 mm spacing, its image 1 mm", "warn"),
                 ("label_smaller_shape", "a label of half the image's shape", "refuse"),
                 ("label_transposed", "a label transposed (other shape)", "refuse"),
                 ("label_flipped_axis", "a label whose x axis is flipped in the affine", "warn"),
                 ("label_extra_value_5", "a label holding value 5 (not in dataset.json)", "warn"),
                 ("label_negative_value", "a label holding -1", "refuse"),
                 ("label_fractional", "a label holding 0.5", "refuse"),
                 ("label_4d_two_volumes", "a 4D label", "refuse"),
                 ("label_pixdim_nan", "a label with pixdim NaN", "refuse"),
                 ("label_pixdim_inf", "a label with pixdim inf", "refuse"),
                 ("image_shifted_20mm", "an image shifted 20 mm from its label", "warn"),
                 ("both_shifted_20mm", "image and label both shifted 20 mm (consistent)", "ok"),
                 ("image_pixdim_0", "an image with pixdim 0", "warn"),
                 ("image_pixdim_nan", "an image with pixdim NaN", "refuse"),
                 ("json_other_labels", "dataset.json with other labels (2 classes)", "warn"),
                 ("json_renamed_labels", "dataset.json with the labels renamed", "warn"),
                 ("json_more_labels", "dataset.json with 4 labels", "warn"),
                 ("json_label_values_strings", "dataset.json label values as strings", "no-traceback"),
                 ("voxels_0.01mm", "0.01 mm voxels (image and label)", "warn"),
                 ("voxels_20mm", "20 mm voxels (image and label)", "warn"),
                 ("label_missing", "a test case without its label", "refuse"))
        for key, text, expect in tests:
            slow = key == "voxels_20mm"
            self.add(g, f"evaluate --test-dir: {text}", lambda r, k=key: self.evaluate_test(r, k), expect=expect,
                     memory=MEMORY_LIMIT, timeout=60 if slow else 240, weight=60 if slow else 6)
        # validation label maps whose geometry no longer fits the dataset's labels
        def moved(run: Path, how: str) -> None:
            path = self.validation(run, ".nii.gz")
            data, affine = load_nifti(path)
            affine = affine.copy()
            if how == "shifted":
                affine[:3, 3] += (20.0, 0.0, 0.0)
            else:
                affine[:3, :3] *= 2.0
            nifti(path, data, affine)

        for how, text in (("shifted", "shifted 20 mm"), ("spacing", "with 2 mm spacing")):
            for label, argv_of in (("evaluate", lambda r: self.evaluate(r)), ("find-best", self.find_best)):
                self.add(g, f"{label} over a validation label map {text} (same shape)", argv_of, expect="warn",
                         mutate=lambda r, h=how: moved(r, h))

    # ................................................................. file types

    def file_types(self) -> None:
        g = FILE_TYPES
        # a file where a folder is expected, and the reverse; "command:expect" where refusing is not the only
        # right answer (find-best leaves out, and names, a model whose fold is incomplete; a non-folder in cv/
        # is no model; evaluate must at least warn that it scores fewer cases)
        swaps = (
            ("cv/ is a file", lambda r: make_file(r / "cv"), "cv",
             ("evaluate", "find-best", "train", "predict-best")),
            ("cv/default_1ep is a file", lambda r: make_file(self.model(r)), DEFAULT,
             ("evaluate:no-traceback", "find-best:no-traceback", "train", "predict-model")),
            ("cv/default_1ep/model.json is a folder", lambda r: make_folder(self.model(r) / "model.json"),
             "model.json", ("evaluate", "find-best", "train", "predict-model")),
            ("cv/default_1ep/fold_0 is a file", lambda r: make_file(self.model(r) / "fold_0"), "fold_0",
             ("evaluate:warn", "find-best:no-traceback", "train", "predict-model")),
            ("fold_0/validation is a file", lambda r: make_file(self.model(r) / "fold_0" / "validation"),
             "validation", ("evaluate:warn", "find-best:no-traceback", "train")),
            ("fold_0/validation/<case>.nii.gz is a folder", lambda r: make_folder(self.validation(r, ".nii.gz")),
             ".nii.gz", ("evaluate", "find-best:no-traceback", "train")),
            ("fold_0/validation/<case>.npz is a folder", lambda r: make_folder(self.validation(r, ".npz")),
             ".npz", ("find-best:no-traceback", "train")),
            ("fold_0/checkpoint.pt is a folder",
             lambda r: make_folder(self.model(r) / "fold_0" / "checkpoint.pt"), "checkpoint.pt",
             ("train", "predict-model", "evaluate-test")),
            ("cv/best_configuration.json is a folder", lambda r: make_folder(self.best(r)),
             "best_configuration.json", ("find-best", "predict-best")),
            ("cv/default_1ep/postprocessing.json is a folder",
             lambda r: make_folder(self.model(r) / "postprocessing.json"), "postprocessing.json",
             ("find-best:no-traceback", "predict-model", "evaluate-test")),
            ("evaluation/ is a file", lambda r: make_file(r / "evaluation"), "evaluation", ("evaluate",)),
            ("evaluation/validation is a file", lambda r: make_file(r / "evaluation" / "validation"),
             "validation", ("evaluate",)),
            ("evaluation/validation/metrics.csv is a folder",
             lambda r: make_folder(r / "evaluation" / "validation" / "metrics.csv"), "metrics.csv", ("evaluate",)),
            ("run.json is a folder", lambda r: make_folder(r / "run.json"), "run.json", ("evaluate", "train")),
            ("fold_0/train.lock is a folder", lambda r: make_folder(self.model(r) / "fold_0" / "train.lock"),
             "train.lock", ("train",)),
            ("cv/default_1ep/model.lock is a folder", lambda r: make_folder(self.model(r) / "model.lock"),
             "model.lock", ("train",)),
        )
        commands = {"evaluate": lambda r: self.evaluate(r), "find-best": self.find_best,
                    "train": lambda r: self.train(r), "predict-model": lambda r: self.predict(self.model(r), r),
                    "predict-best": lambda r: self.predict(self.best(r), r),
                    "evaluate-test": lambda r: self.evaluate_test(r)}
        for text, mutate, names, which in swaps:
            for command in which:
                command, _, expect = command.partition(":")
                label = {"predict-model": "predict --model RUN/cv/default_1ep",
                         "predict-best": "predict --model best_configuration.json",
                         "evaluate-test": "evaluate --test-dir", "train": "train --folds 0"}.get(command, command)
                self.add(g, f"{label}: {text}", commands[command], mutate=mutate, expect=expect or "refuse",
                         names=None if expect else names)

        # model.json fields of the wrong type or value
        def model_json(change: Callable[[dict], Any], model: str = DEFAULT) -> Callable[[Path], None]:
            return lambda r: edit_json(self.model(r, model) / "model.json", change)

        folds = (('"0"', "0", "refuse"), ("null", None, "refuse"), ("[7]", [7], "refuse"),
                 ("[-1]", [-1], "refuse"), ("[0, 0]", [0, 0], "no-traceback"),
                 ("[0, 1, 2] (no fold_2 on disk)", [0, 1, 2], "warn"), ("[]", [], "refuse"))
        for text, value, expect in folds:
            mutate = model_json(lambda d, v=value: d.update(folds=v))
            for label, argv_of in (("evaluate", lambda r: self.evaluate(r)),
                                   ("predict --model RUN/cv/default_1ep", lambda r: self.predict(self.model(r), r))):
                self.add(g, f"{label}: model.json folds {text}", argv_of, mutate=mutate, expect=expect,
                         names="model.json" if expect == "refuse" else None)
            # find-best leaves out a model without usable folds (and says so): refusing it is fine too
            self.add(g, f"find-best: model.json folds {text}", self.find_best, mutate=mutate,
                     expect="no-traceback" if value in ([0, 0], [0, 1, 2], []) else "refuse",
                     names="model.json" if value not in ([0, 0], [0, 1, 2], []) else None)
        for text, value in (('"0"', "0"), ("[7]", [7]), ("[]", [])):
            self.add(g, f"train --folds 0: model.json folds {text}", lambda r: self.train(r),
                     mutate=model_json(lambda d, v=value: d.update(folds=v)),
                     expect="no-traceback" if value == [] else "refuse")
        for field, values in (("epochs", (('"x"', "x"),)), ("iterations_per_epoch", (("0", 0),)),
                              ("trial_id", (("99", 99),)), ("config", (("[]", []),))):
            for text, value in values:
                self.add(g, f"train --folds 0: model.json {field} {text}", lambda r: self.train(r),
                         mutate=model_json(lambda d, f=field, v=value: d.update({f: v})), names="model.json")
        for text, value in (('"x"', "x"),):
            self.add(g, f"evaluate: model.json epochs {text}", lambda r: self.evaluate(r), expect="no-traceback",
                     mutate=model_json(lambda d, v=value: d.update(epochs=v)))
        for text, value in (("[]", []),):
            self.add(g, f"predict --model RUN/cv/default_1ep: model.json config {text}",
                     lambda r: self.predict(self.model(r), r), expect="no-traceback",
                     mutate=model_json(lambda d, v=value: d.update(config=v)))
        for text, value in (("5", 5), ("[]", [])):
            mutate = model_json(lambda d, v=value: d.update(name=v))
            self.add(g, f"evaluate: model.json name {text}", lambda r: self.evaluate(r), mutate=mutate,
                     names="model.json")
            self.add(g, f"evaluate --test-dir: model.json name {text}", lambda r: self.evaluate_test(r),
                     mutate=mutate, names="model.json")
        for text, content in (("a JSON list", b"[1, 2]\n"), ("garbage bytes", None)):
            def whole(run: Path, content=content) -> None:
                path = self.model(run) / "model.json"
                if content == "TRUNCATE":
                    truncate(path)
                else:
                    path.write_bytes(self.api.FUZZ.GARBAGE if content is None else content)
            for label, argv_of in (("evaluate", lambda r: self.evaluate(r)), ("find-best", self.find_best),
                                   ("train --folds 0", lambda r: self.train(r)),
                                   ("predict --model RUN/cv/default_1ep", lambda r: self.predict(self.model(r), r))):
                self.add(g, f"{label}: model.json is {text}", argv_of, mutate=whole, names="model.json")

        # best_configuration.json (predict --model it)
        def best_json(change: Callable[[dict], Any]) -> Callable[[Path], None]:
            return lambda r: edit_json(self.best(r), change)

        best_cases = [
            ("best is a list", lambda d: d.update(best=[DEFAULT]), "refuse"),
            ("best is missing", lambda d: d.pop("best"), "refuse"),
            ("members [1]", lambda d: d["best"].update(members=[1]), "refuse"),
            ("members []", lambda d: d["best"].update(members=[]), "refuse"),
            ("members [[name]]", lambda d: d["best"].update(members=[[DEFAULT]]), "refuse"),
            ("postprocessing a string", lambda d: d.update(postprocessing="largest component"), "refuse"),
            ("postprocessing a list", lambda d: d.update(postprocessing=[[1, 2]]), "refuse"),
            ("postprocessing null (no decision)", lambda d: d.update(postprocessing=None), "ok"),
            ("postprocessing {} (no decision)", lambda d: d.update(postprocessing={}), "no-traceback"),
            ("postprocessing without regions", lambda d: d.update(postprocessing={"description": "x"}), "refuse"),
        ]
        regions = (('[["1"]]', [["1"]], "refuse"), ("[[]]", [[]], "refuse"), ("[[7]] (no label 7)", [[7]], "refuse"),
                   ("[[0]] (background)", [[0]], "refuse"), ("[] (no step)", [], "ok"), ("[[1], [1]]", [[1], [1]],
                                                                                  "no-traceback"))
        for text, value, expect in regions:
            best_cases.append((f"postprocessing regions {text}",
                               lambda d, v=value: d.update(postprocessing={"regions": v}), expect))
        for text, change, expect in best_cases:
            self.add(g, f"predict --model best_configuration.json: {text}", lambda r: self.predict(self.best(r), r),
                     mutate=best_json(change), expect=expect,
                     names="best_configuration.json" if expect == "refuse" else None)
        for text, content in (("a JSON list", b"[]\n"), ("garbage bytes", None)):
            def whole_best(run: Path, content=content) -> None:
                self.best(run).write_bytes(self.api.FUZZ.GARBAGE if content is None else content)
            self.add(g, f"predict --model best_configuration.json: the file is {text}",
                     lambda r: self.predict(self.best(r), r), mutate=whole_best, names="best_configuration.json")
        self.add(g, "find-best over a garbage best_configuration.json (its own output)", self.find_best,
                 expect="ok", mutate=lambda r: self.best(r).write_bytes(self.api.FUZZ.GARBAGE))

        # a model folder's postprocessing.json (predict --model RUN/cv/<name>, evaluate --test-dir)
        def decision(value, raw: bytes | None = None) -> Callable[[Path], None]:
            def mutate(run: Path) -> None:
                path = self.model(run) / "postprocessing.json"
                if raw is not None:
                    path.write_bytes(raw)
                else:
                    write_json(path, value)
            return mutate

        pp_cases = (("a string", "largest component", None, "refuse"), ("a list", [[1, 2]], None, "refuse"),
                    ("regions as strings", {"regions": ["1", "2"]}, None, "refuse"),
                    ("regions [[\"1\"]]", {"regions": [["1"]]}, None, "refuse"),
                    ("regions [[7]] (no label 7)", {"regions": [[7]]}, None, "refuse"),
                    ("regions [[0]] (background)", {"regions": [[0]]}, None, "refuse"),
                    ("{} (no regions)", {}, None, "refuse"),
                    ("regions with evidence a string", {"regions": [[1]], "evidence": "x"}, None, "no-traceback"),
                    ("garbage bytes", None, b"\x00\xff garbage", "refuse"))
        for text, value, raw, expect in pp_cases:
            self.add(g, f"predict --model RUN/cv/default_1ep: postprocessing.json {text}",
                     lambda r: self.predict(self.model(r), r), mutate=decision(value, raw), expect=expect,
                     names="postprocessing.json" if expect == "refuse" else None)
        for text, value, raw, expect in pp_cases[:7:2]:
            self.add(g, f"evaluate --test-dir: postprocessing.json {text}", lambda r: self.evaluate_test(r),
                     mutate=decision(value, raw), expect=expect,
                     names="postprocessing.json" if expect == "refuse" else None)

        # run.json fields of the wrong type
        for field, text, value in (("dataset", "5", 5), ("dataset", "[]", []),
                                   ("preset", "5", 5), ("iterations_per_epoch", '"1"', "1"),
                                   ("max_stages", '"3"', "3")):
            mutate = (lambda f, v: lambda r: edit_json(r / "run.json", lambda d: d.update({f: v})))(field, value)
            uses = {"dataset": ("evaluate", "find-best", "train --folds 0"), "preset": ("train --folds 0",),
                    "iterations_per_epoch": ("train --folds 0",), "max_stages": ("train --folds 0",)}[field]
            for label in uses:
                argv_of = {"evaluate": lambda r: self.evaluate(r), "find-best": self.find_best,
                           "train --folds 0": lambda r: self.train(r)}[label]
                # --iterations-per-epoch is given on the command line: run.json's value is not needed
                unused = field == "iterations_per_epoch"
                self.add(g, f"{label}: run.json {field} {text}", argv_of, mutate=mutate,
                         expect="no-traceback" if unused else "refuse", names=None if unused else "run.json")
