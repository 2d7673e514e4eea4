"""A deterministic synthetic brain-MRI dataset: the built-in demo data.

Each case is a head-like ellipsoid (scalp, skull, CSF, grey/white-matter texture, ventricles)
in air that is exactly zero, so crop-to-nonzero has something to crop. Thirty bright, lumpy
lesions (label 1 "organ": ellipsoids whose surfaces a smooth random field bends) with brighter
cores (label 2 "substructure") lie spread over the brain, in new positions, sizes and
orientations per case. Together they fill ~6% of the built-in volume and stand out from every tissue by
several noise levels, so a small network trained for a few hundred iterations on a CPU segments
them (the demo must show learning within minutes). A smooth multiplicative bias field and
Rician noise make it MRI-like.

The built-in data is a thick-slice acquisition: 44 slices of 3 mm, 144x144 voxels of 1 mm in
plane. After cropping the air away the head still spans >= 128 voxels in plane, the size at
which nnU-Net's planning rules choose a 6-stage 3D U-Net. The CPU preset's patch (24x64x64)
then holds tissue and several lesions, as the validation windows do. (Version 1 had one organ
under 1% of an isotropic 144^3 volume; one organ large enough to be 5% was larger than the
patch, so patches lay wholly inside or outside it and the networks, instance-normalised per
patch, did not learn it in the demo's budget.) Same parameters -> byte-identical files (every
case has its own seeded generator).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hnas.data.io import write_volume
from hnas.errors import DatasetError

SYNTHETIC_NAME = "Dataset900_SyntheticBrain"
DEFAULT_SHAPE = (44, 144, 144)  # (z, y, x)
DEFAULT_SPACING = (3.0, 1.0, 1.0)  # mm; used with DEFAULT_SHAPE, other shapes default to 1 mm isotropic
MARKER_FILE = "hnas_synthetic.json"  # written last: its presence means the folder is complete
GENERATOR_VERSION = 2  # bump when the images change: cached folders are rewritten
LABELS = {"background": 0, "organ": 1, "substructure": 2}

# Tissue intensities (arbitrary MRI-like units, T1-ish contrast). The labelled structures are
# brighter than any tissue (like contrast-enhanced lesions): >= 10 noise levels apart.
WHITE_MATTER, GREY_MATTER, CSF, SKULL, SCALP = 1000.0, 860.0, 250.0, 120.0, 900.0
ORGAN, SUBSTRUCTURE = 1750.0, 2600.0
# LESIONS organ blobs, semi-axes as fractions of the brain's: together they fill >= 5% of the
# volume; their surfaces are bent by up to ORGAN_LUMPINESS of the radius.
LESIONS = 30
ORGAN_SIZE = (0.18, 0.25)
ORGAN_LUMPINESS = 0.12
# Head layers as fractions of the head ellipsoid's radius: brain | CSF | skull | scalp.
BRAIN_RADIUS = 0.84


@dataclass(frozen=True)
class SyntheticParameters:
    n_cases: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    seed: int
    name: str
    generator_version: int = GENERATOR_VERSION

    def __post_init__(self):
        if self.n_cases < 1:
            raise DatasetError(f"n_cases is {self.n_cases}; expected at least 1")
        if len(self.shape) != 3 or min(self.shape) < 16:
            raise DatasetError(f"shape is {self.shape}; expected three sizes (z, y, x), each at least 16")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise DatasetError(f"spacing is {self.spacing}; expected three positive values (z, y, x)")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


# ---------------------------------------------------------------- geometry helpers


def _axes_mm(shape, spacing) -> list[np.ndarray]:
    """Broadcastable physical coordinates (mm) of voxel centres, origin at the volume centre."""
    axes = []
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        view = [1, 1, 1]
        view[axis] = n
        axes.append(((np.arange(n, dtype=np.float32) - (n - 1) / 2) * np.float32(s)).reshape(view))
    return axes


def _random_rotation(rng: np.random.Generator, max_degrees: float | None = None) -> np.ndarray:
    """A rotation matrix: uniformly random, or small angles about each axis when max_degrees is given."""
    if max_degrees is None:
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        q = q * np.sign(np.diag(r))
        if np.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        return q
    rotation = np.eye(3)
    for axis, angle in enumerate(np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=3))):
        i, j = [a for a in range(3) if a != axis]
        step = np.eye(3)
        step[i, i] = step[j, j] = np.cos(angle)
        step[i, j], step[j, i] = -np.sin(angle), np.sin(angle)
        rotation = rotation @ step
    return rotation


def _ellipsoid_radius(axes, centre, semi_axes, rotation) -> np.ndarray:
    """Normalised radius: < 1 inside the ellipsoid, 1 on its surface."""
    offsets = [a - np.float32(c) for a, c in zip(axes, centre)]
    total = None
    for i in range(3):  # coordinate i in the ellipsoid's own frame
        u = sum(np.float32(rotation[j, i]) * offsets[j] for j in range(3)) / np.float32(semi_axes[i])
        total = u * u if total is None else total + u * u
    return np.sqrt(total)


def _soft_inside(radius: np.ndarray, semi_axes, spacing) -> np.ndarray:
    """Partial-volume membership: 1 inside, 0 outside, a ramp about one voxel wide at the surface."""
    width = np.float32(min(spacing) / min(semi_axes))
    return np.clip(np.float32(0.5) + (np.float32(1.0) - radius) / width, 0.0, 1.0)


def _linear_upsampling(coarse: int, fine: int) -> np.ndarray:
    """(fine, coarse) matrix of linear-interpolation weights spanning the same extent."""
    position = np.linspace(0, coarse - 1, fine)
    lower = np.minimum(np.floor(position).astype(int), coarse - 2)
    upper_weight = position - lower
    weights = np.zeros((fine, coarse), dtype=np.float32)
    weights[np.arange(fine), lower] = 1 - upper_weight
    weights[np.arange(fine), lower + 1] = upper_weight
    return weights


def _smooth_field(shape, rng: np.random.Generator, coarseness: int = 8) -> np.ndarray:
    """Smooth random field in about [-1, 1]: coarse noise, blurred, upsampled (separable linear)."""
    from scipy import ndimage  # imported here: it doubles `import hnas.data` time and only generation needs it

    coarse_shape = tuple(max(4, n // coarseness) for n in shape)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), sigma=1.0)
    field = (coarse / (np.abs(coarse).max() + 1e-8)).astype(np.float32)
    for axis, (c, n) in enumerate(zip(coarse_shape, shape)):
        field = np.moveaxis(np.tensordot(_linear_upsampling(c, n), field, axes=(1, axis)), 0, axis)
    return np.ascontiguousarray(field)


def _bias_field(axes, half_extent, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative intensity inhomogeneity (linear + quadratic terms), about 0.75..1.25."""
    normalised = [a / np.float32(h) for a, h in zip(axes, half_extent)]
    linear = rng.uniform(-0.12, 0.12, size=3)
    quadratic = rng.uniform(-0.08, 0.08, size=3)
    field = np.float32(1.0)
    for n, lin, quad in zip(normalised, linear, quadratic):
        field = field + np.float32(lin) * n + np.float32(quad) * n * n
    return field


# ---------------------------------------------------------------- one case


def _lesions(axes, shape, spacing, head_centre, brain_semi, rng: np.random.Generator):
    """Normalised radii (< 1 inside) of LESIONS lumpy "organ" blobs spread over the brain and of
    their cores (the substructure), plus the smallest semi-axes (for the partial-volume ramp).

    Many mid-sized blobs rather than one big one: every training patch then holds a similar mix of
    tissue and structure, as the validation windows do; a single organ larger than the patch left
    most patches inside or outside it, and the instance-normalised networks hardly learnt.
    """
    min_size = 2.5 * max(spacing)
    lumps = np.float32(1.0) + np.float32(ORGAN_LUMPINESS) * _smooth_field(shape, rng, coarseness=16)
    organ_radius = sub_radius = None
    smallest = np.full(3, np.inf)
    for _ in range(LESIONS):
        semi = np.maximum(brain_semi * rng.uniform(*ORGAN_SIZE, size=3), min_size)
        direction = rng.standard_normal(3)
        centre = head_centre + direction / np.linalg.norm(direction) * brain_semi * 0.75 * rng.uniform() ** (1 / 3)
        rotation = _random_rotation(rng)
        radius = _ellipsoid_radius(axes, centre, semi, rotation) / lumps
        core_semi = np.maximum(semi * rng.uniform(0.5, 0.65, size=3), 0.5 * min_size)
        core = _ellipsoid_radius(axes, centre + rotation @ (semi * rng.uniform(-0.15, 0.15, size=3)), core_semi,
                                 rotation)
        organ_radius = radius if organ_radius is None else np.minimum(organ_radius, radius)
        sub_radius = core if sub_radius is None else np.minimum(sub_radius, core)
        smallest = np.minimum(smallest, semi)
    return organ_radius, sub_radius, smallest


def synthetic_case(shape, spacing, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One case: int16 image and uint8 label map, both [z, y, x]."""
    axes = _axes_mm(shape, spacing)
    half = np.array([n * s / 2 for n, s in zip(shape, spacing)])
    spacing = tuple(float(s) for s in spacing)

    head_semi = half * rng.uniform(0.90, 0.97, size=3)
    head_centre = (half - head_semi) * rng.uniform(-0.5, 0.5, size=3)
    head_rotation = _random_rotation(rng, max_degrees=4.0)
    head_radius = _ellipsoid_radius(axes, head_centre, head_semi, head_rotation)

    # Layers outside the brain by radius, brain texture inside.
    layers = np.interp(head_radius, [0.0, 0.86, 0.88, 0.90, 0.93, 0.95, 1.0],
                       [CSF, CSF, CSF, SKULL, SKULL, SCALP, SCALP]).astype(np.float32)
    brain_weight = np.interp(head_radius, [BRAIN_RADIUS - 0.02, BRAIN_RADIUS + 0.01], [1.0, 0.0]).astype(np.float32)
    texture = _smooth_field(shape, rng, coarseness=4)
    white_fraction = 1.0 / (1.0 + np.exp(-10.0 * texture))
    brain = np.float32(GREY_MATTER) + np.float32(WHITE_MATTER - GREY_MATTER) * white_fraction
    brain_semi = head_semi * BRAIN_RADIUS

    for side in (-1.0, 1.0):  # two ventricles, mirrored left/right (x is the last axis)
        semi = brain_semi * np.array([0.22, 0.25, 0.07]) * rng.uniform(0.8, 1.2, size=3)
        centre = head_centre + brain_semi * np.array([0.05, 0.0, 0.12 * side])
        v_radius = _ellipsoid_radius(axes, centre, semi, head_rotation)
        ventricle = _soft_inside(v_radius, semi, spacing)
        brain = brain * (1 - ventricle) + np.float32(CSF) * ventricle
    image = brain * brain_weight + layers * (1 - brain_weight)

    organ_radius, sub_radius, smallest = _lesions(axes, shape, spacing, head_centre, brain_semi, rng)
    organ = _soft_inside(organ_radius, smallest, spacing)
    sub = _soft_inside(sub_radius, 0.6 * smallest, spacing) * organ
    contrast = rng.uniform(0.9, 1.1)
    image = image * (1 - organ) + np.float32(ORGAN * contrast) * organ
    image = image * (1 - sub) + np.float32(SUBSTRUCTURE * contrast) * sub

    image = image * _bias_field(axes, half, rng) * np.float32(rng.uniform(0.85, 1.15))
    sigma = np.float32(WHITE_MATTER * rng.uniform(0.04, 0.06))
    real = image + sigma * rng.standard_normal(shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(shape, dtype=np.float32)
    magnitude = np.sqrt(real * real + imaginary * imaginary)  # Rician noise

    head = head_radius < 1.0
    pixels = np.where(head, np.clip(np.rint(magnitude), 1, np.iinfo(np.int16).max), 0).astype(np.int16)
    label = np.zeros(shape, dtype=np.uint8)
    label[(organ_radius < 1.0) & head] = LABELS["organ"]
    label[(organ_radius < 1.0) & (sub_radius < 1.0) & head] = LABELS["substructure"]
    return pixels, label


# ---------------------------------------------------------------- dataset folders


def _dataset_json(params: SyntheticParameters) -> dict:
    return {
        "channel_names": {"0": "MRI"},
        "labels": dict(LABELS),
        "numTraining": params.n_cases,
        "file_ending": ".nii.gz",
        "name": params.name.split("_", 1)[-1],
        "description": "Synthetic brain-like MRI made by hnas.data.synthetic: bright lumpy lesions (1) with "
                       "brighter cores (2) in a noisy head phantom. Deterministic for the parameters below.",
        "hnas_synthetic": json.loads(params.to_json()),
    }


def _case_id(index: int) -> str:
    return f"synth_{index:03d}"


def _write_dataset(folder: Path, params: SyntheticParameters) -> None:
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    (folder / "dataset.json").write_text(json.dumps(_dataset_json(params), indent=2) + "\n")
    for index in range(params.n_cases):
        rng = np.random.default_rng([params.seed, index])
        image, label = synthetic_case(params.shape, params.spacing, rng)
        write_volume(image, params.spacing, folder / "imagesTr" / f"{_case_id(index)}_0000.nii.gz")
        write_volume(label, params.spacing, folder / "labelsTr" / f"{_case_id(index)}.nii.gz")
    (folder / MARKER_FILE).write_text(params.to_json() + "\n")


def _is_synthetic(folder: Path) -> bool:
    """True when ``folder`` was written by this module (safe to replace)."""
    if (folder / MARKER_FILE).is_file():
        return True
    try:
        return "hnas_synthetic" in json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError):
        return False


def _marker_matches(folder: Path, params: SyntheticParameters) -> bool:
    try:
        return json.loads((folder / MARKER_FILE).read_text()) == json.loads(params.to_json())
    except (OSError, ValueError):
        return False


def _parameters(n_cases, shape, spacing, seed, name) -> SyntheticParameters:
    if spacing is None:  # the built-in data's thick slices; small test volumes stay isotropic
        spacing = DEFAULT_SPACING if tuple(shape) == DEFAULT_SHAPE else (1.0, 1.0, 1.0)
    return SyntheticParameters(n_cases=int(n_cases), shape=tuple(int(s) for s in shape),
                               spacing=tuple(float(s) for s in spacing), seed=int(seed), name=str(name))


def make_synthetic_dataset(out_dir: str | Path, *, n_cases: int = 20, shape=DEFAULT_SHAPE,
                           spacing=None, seed: int = 0, name: str = SYNTHETIC_NAME) -> Path:
    """Write the synthetic dataset to ``out_dir/name`` (nnU-Net v2 raw format) and return that folder.

    The folder is written under a temporary name and renamed when complete, so a crash or a
    concurrent writer never leaves a half-written dataset behind. An existing folder is only
    replaced if this module wrote it. ``spacing`` None: DEFAULT_SPACING for DEFAULT_SHAPE, else 1 mm.
    """
    params = _parameters(n_cases, shape, spacing, seed, name)
    out_dir = Path(out_dir)
    target = out_dir / name
    if target.exists() and not _is_synthetic(target):
        raise DatasetError(f"{str(target)!r} exists and was not written by hnas; refusing to overwrite it "
                           "(choose another out_dir or name)")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir))
    try:
        _write_dataset(staging / "data", params)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "data", target)
    except OSError:
        if not _marker_matches(target, params):  # lost a race to an identical writer: fine
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_synthetic_dataset(cache_dir: str | Path, *, n_cases: int = 20, shape=DEFAULT_SHAPE,
                             spacing=None, seed: int = 0, name: str = SYNTHETIC_NAME) -> Path:
    """The synthetic dataset in ``cache_dir``: reused when complete with the same parameters, else (re)written."""
    params = _parameters(n_cases, shape, spacing, seed, name)
    target = Path(cache_dir) / name
    if _marker_matches(target, params):
        return target
    return make_synthetic_dataset(cache_dir, n_cases=n_cases, shape=shape, spacing=params.spacing, seed=seed,
                                  name=name)
