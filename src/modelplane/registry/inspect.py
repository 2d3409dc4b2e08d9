"""Check an uploaded artifact against its declared format and infer its signature.

Runs on the uploaded temp file before the blob is committed: an artifact that
fails here is refused with 422 naming the reason, and nothing is stored.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path
from typing import Any

from modelplane.errors import InvalidInput
from modelplane.runtimes.pickle import scan_pickle
from modelplane.schemas.registry import FORMATS, Signature, TensorSpec
from modelplane.storage.archives import ArchiveInfo, normalize_member

_ZIP_FORMATS = {
    "skops": "a skops file",
    "torchscript": "a TorchScript archive",
    "torch_export": "a torch.export (.pt2) archive",
}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def inspect_artifact(
    fmt: str, packaging: str, path: Path, archive: ArchiveInfo | None
) -> Signature | None:
    """Validate the artifact; return its signature where the format carries one."""
    if fmt in ("onnx", "sklearn_onnx"):
        return _onnx_signature(_onnx_bytes(packaging, path, archive))
    if fmt in _ZIP_FORMATS:
        if packaging == "file" and not zipfile.is_zipfile(path):
            raise InvalidInput(f"artifact is not {_ZIP_FORMATS[fmt]} (not a zip container)")
        return None
    if fmt == "pickle":
        if archive is not None:
            raise InvalidInput("format 'pickle' takes one .pkl or .joblib file, not an archive")
        scan_pickle(path)  # walks the opcodes; never unpickles
        return None
    if fmt == "transformers":
        if archive is None:
            raise InvalidInput("format 'transformers' needs a directory (tar or zip) artifact")
        if not any(Path(name).name == "config.json" for name in archive.files):
            raise InvalidInput("transformers artifact has no config.json")
        return None
    return None


def _onnx_bytes(packaging: str, path: Path, archive: ArchiveInfo | None) -> bytes:
    if archive is None:
        return path.read_bytes()
    candidates = sorted(n for n in archive.files if n.endswith(".onnx"))
    if not candidates:
        raise InvalidInput("archive holds no .onnx file")
    name = next((n for n in candidates if Path(n).name == "model.onnx"), candidates[0])
    if packaging == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir() and normalize_member(info.filename) == name:
                    return zf.read(info)
        raise InvalidInput(f"cannot read {name!r} from the archive")
    with tarfile.open(path, "r:*") as tf:
        for member in tf:
            if member.isfile() and normalize_member(member.name) == name:
                fh = tf.extractfile(member)
                if fh is not None:
                    return fh.read()
    raise InvalidInput(f"cannot read {name!r} from the archive")


def _onnx_signature(data: bytes) -> Signature:
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise InvalidInput(f"artifact is not a valid ONNX model: {exc}") from exc
    if not model.graph.node and not model.graph.output:
        raise InvalidInput("artifact is not a valid ONNX model: the graph is empty")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(f"artifact is not a valid ONNX model: {msg}") from exc
    initializers = {init.name for init in model.graph.initializer}
    return Signature(
        inputs=[_spec(v) for v in model.graph.input if v.name not in initializers],
        outputs=[_spec(v) for v in model.graph.output],
    )


def _spec(value: Any) -> TensorSpec:
    import onnx

    tensor = value.type.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        name = "string" if dtype.kind == "O" else str(dtype)
    except (KeyError, ValueError, TypeError):
        name = "unknown"
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return TensorSpec(name=value.name, dtype=name, shape=shape)
