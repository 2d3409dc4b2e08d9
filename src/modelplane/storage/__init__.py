"""Content-addressed blob storage behind the registry, datasets and job outputs."""

from modelplane.storage.archives import ArchiveInfo, extract_archive, inspect_archive
from modelplane.storage.blobs import BlobStore, BlobWriter

__all__ = ["ArchiveInfo", "BlobStore", "BlobWriter", "extract_archive", "inspect_archive"]
