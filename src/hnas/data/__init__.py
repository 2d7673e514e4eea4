"""Datasets: nnU-Net v2 raw and MSD folders, validation, fingerprints, the synthetic demo dataset.

Every array and per-axis value uses nnU-Net's axis order (z, y, x) = the NIfTI axes reversed.
No torch here: this package must stay quick to import.
"""

from hnas.data.dataset import Case, CaseData, Dataset, load_dataset, read_case
from hnas.data.fingerprint import (ChannelIntensity, DatasetAnalysis, Fingerprint, analyze_dataset,
                                   compute_fingerprint, crop_to_nonzero, load_fingerprint, nonzero_bbox,
                                   read_nnunet_fingerprint, save_fingerprint)
from hnas.data.io import ImageGeometry, ImageVolume, read_header, read_images, read_label_map, write_label_map
from hnas.data.splits import N_FOLDS, fold_split
from hnas.data.synthetic import SYNTHETIC_NAME, ensure_synthetic_dataset, make_synthetic_dataset
from hnas.data.validation import DatasetWarning, validate_dataset

__all__ = [
    "Case",
    "CaseData",
    "ChannelIntensity",
    "Dataset",
    "DatasetAnalysis",
    "DatasetWarning",
    "N_FOLDS",
    "Fingerprint",
    "ImageGeometry",
    "ImageVolume",
    "SYNTHETIC_NAME",
    "analyze_dataset",
    "compute_fingerprint",
    "crop_to_nonzero",
    "ensure_synthetic_dataset",
    "fold_split",
    "load_dataset",
    "load_fingerprint",
    "make_synthetic_dataset",
    "nonzero_bbox",
    "read_case",
    "read_header",
    "read_images",
    "read_label_map",
    "read_nnunet_fingerprint",
    "save_fingerprint",
    "validate_dataset",
    "write_label_map",
]
