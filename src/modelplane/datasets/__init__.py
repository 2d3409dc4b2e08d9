"""Datasets: uploaded CSV, Parquet, NPZ, JSONL and zipped image folders.

Content-addressed in the blob store, owned by a tenant, listed with an inferred
schema; ``load_dataset`` reads one back for training.
"""

from modelplane.datasets.loader import ImageData, load_dataset
from modelplane.datasets.schema import format_from_filename, infer_schema
from modelplane.datasets.service import DatasetMeta, DatasetService
from modelplane.datasets.store import DatasetStore, NewDataset

__all__ = [
    "DatasetMeta",
    "DatasetService",
    "DatasetStore",
    "ImageData",
    "NewDataset",
    "format_from_filename",
    "infer_schema",
    "load_dataset",
]
