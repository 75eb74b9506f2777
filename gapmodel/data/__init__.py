"""Data contracts: read, validate and harmonise inputs into one immutable Dataset."""

from gapmodel.data.build import build_dataset, load_dataset, validate_directory
from gapmodel.data.dataset import Dataset
from gapmodel.data.manifest import Manifest, RegisterOptions
from gapmodel.data.problems import DataValidationError, Problem

__all__ = [
    "DataValidationError",
    "Dataset",
    "Manifest",
    "Problem",
    "RegisterOptions",
    "build_dataset",
    "load_dataset",
    "validate_directory",
]
