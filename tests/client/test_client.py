"""The SDK (``modelplane.Client``) against a real server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import modelplane
from modelplane import Client
from modelplane.errors import Conflict, InvalidInput, ModelplaneError, NotFound
from modelplane.schemas.registry import Version
from tests.conftest import LiveServer


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


@pytest.fixture
def onnx_file(tmp_path: Path, onnx_bytes: bytes) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes)
    return path


def add_versions(client: Client, model: str, path: Path, count: int) -> list[Version]:
    """Create ``model`` and upload ``path`` to it ``count`` times."""
    client.create_model(model)
    return [client.upload_version(model, path, "onnx") for _ in range(count)]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# -- models ----------------------------------------------------------------------
def test_model_create_get_update_delete(client: Client) -> None:
    created = client.create_model(
        "resnet", description="image classifier", task="vision", tags={"team": "a", "tier": "1"}
    )
    assert (created.name, created.description, created.task) == (
        "resnet",
        "image classifier",
        "vision",
    )
    assert created.tags == {"team": "a", "tier": "1"}
    assert created.latest_version is None

    fetched = client.get_model("resnet")
    assert fetched.model_dump() == created.model_dump()

    updated = client.update_model(
        "resnet", description="v2 classifier", tags={"team": "b"}, remove_tags=["tier"]
    )
    assert updated.description == "v2 classifier"
    assert updated.task == "vision"  # untouched when not given
    assert updated.tags == {"team": "b"}
    assert client.get_model("resnet").tags == {"team": "b"}

    client.delete_model("resnet")
    with pytest.raises(NotFound):
        client.get_model("resnet")
    assert [m.name for m in client.list_models()] == []


def test_list_models_walks_every_page(client: Client) -> None:
    names = ["m-0", "m-1", "m-2", "m-3", "m-4", "other"]
    for i, name in enumerate(reversed(names)):
        client.create_model(name, task="vision" if i % 2 else "text", tags={"n": str(i)})

    assert [m.name for m in client.list_models(page_size=2)] == names
    assert [m.name for m in client.list_models(prefix="m-", page_size=2)] == names[:5]
    assert [m.name for m in client.list_models(task="vision", page_size=2)] == [
        "m-0",
        "m-2",
        "m-4",
    ]
    assert [m.name for m in client.list_models(tag="n=0")] == ["other"]


def test_list_versions_walks_every_page(client: Client, onnx_file: Path) -> None:
    add_versions(client, "m", onnx_file, 3)
    client.update_version("m@2", tags={"stage": "prod"})

    assert [v.version for v in client.list_versions("m", page_size=2)] == [3, 2, 1]
    assert [v.version for v in client.list_versions("m", order="asc", page_size=2)] == [1, 2, 3]
    assert [v.version for v in client.list_versions("m", tag="stage=prod")] == [2]
    assert client.get_model("m").latest_version == 3


# -- upload ----------------------------------------------------------------------
def test_upload_file_records_metadata(client: Client, onnx_file: Path, onnx_bytes: bytes) -> None:
    client.create_model("base")
    client.upload_version("base", onnx_file, "onnx")
    client.set_alias("base", "production", 1)
    client.create_model("tuned")

    v = client.upload_version(
        "tuned",
        onnx_file,
        "onnx",
        description="fine-tuned",
        params={"lr": 0.01, "layers": [64, 32]},
        metrics={"acc": 0.91, "loss": 0.2},
        tags={"stage": "dev"},
        parents=["base@production"],
        source={"git": "abc123", "job": 7},
    )
    assert (v.model, v.version, v.format) == ("tuned", 1, "onnx")
    assert v.artifact.sha256 == hashlib.sha256(onnx_bytes).hexdigest()
    assert v.artifact.size == len(onnx_bytes)
    assert (v.artifact.packaging, v.artifact.filename) == ("file", "model.onnx")
    inputs = [(t.name, t.dtype, t.shape) for t in v.signature.inputs]
    assert inputs == [("x", "float32", [-1, 4])]

    back = client.get_version("tuned@1")
    assert back.params == {"lr": 0.01, "layers": [64, 32]}
    assert back.metrics == {"acc": 0.91, "loss": 0.2}
    assert back.tags == {"stage": "dev"}
    assert back.parents == ["base@1"]  # the alias is resolved when the version is recorded
    assert back.source == {"git": "abc123", "job": 7}
    assert back.description == "fine-tuned"
    assert back.model_dump() == v.model_dump()


def test_upload_directory_is_sent_as_tar(
    client: Client, tmp_path: Path, onnx_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    folder = tmp_path / "bundle"
    (folder / "tokenizer" / "extra").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    (folder / "tokenizer" / "extra" / "merges.txt").write_text("ab\n")
    client.create_model("m")

    v = client.upload_version("m", folder, "onnx")

    assert v.artifact.packaging == "tar"
    assert v.artifact.filename == "bundle.tar"
    assert v.artifact.files == {
        "model.onnx": len(onnx_bytes),
        "tokenizer/extra/merges.txt": 3,
        "tokenizer/vocab.txt": 4,
    }
    assert [t.name for t in v.signature.inputs] == ["x"]  # read from the packed model.onnx
    assert list(scratch.iterdir()) == []  # the temporary tar is removed


def test_upload_progress_ends_at_total(client: Client, onnx_file: Path) -> None:
    client.create_model("m")
    calls: list[tuple[int, int]] = []

    client.upload_version("m", onnx_file, "onnx", progress=lambda d, t: calls.append((d, t)))

    size = onnx_file.stat().st_size
    assert calls
    assert calls[-1] == (size, size)
    assert {total for _, total in calls} == {size}
    done = [d for d, _ in calls]
    assert done == sorted(done)


# -- download --------------------------------------------------------------------
def test_download_to_file_and_to_folder(
    client: Client, onnx_file: Path, onnx_bytes: bytes, tmp_path: Path
) -> None:
    add_versions(client, "m", onnx_file, 2)
    out = tmp_path / "out"
    out.mkdir()

    calls: list[tuple[int, int]] = []
    saved = client.download("m@1", out / "copy.onnx", progress=lambda d, t: calls.append((d, t)))
    assert saved == out / "copy.onnx"
    assert saved.read_bytes() == onnx_bytes
    assert calls[-1] == (len(onnx_bytes), len(onnx_bytes))

    saved = client.download("m", out)  # latest, named by the server
    assert saved == out / "m-v2-model.onnx"
    assert saved.read_bytes() == onnx_bytes
    assert sorted(p.name for p in out.iterdir()) == ["copy.onnx", "m-v2-model.onnx"]
    assert leftovers(out) == []


def _mock_client(body: bytes, etag: str) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/models/m/versions/1/artifact"
        return httpx.Response(200, content=body, headers={"ETag": f'"{etag}"'})

    return Client("http://127.0.0.1:9", transport=httpx.MockTransport(handler))


def test_download_accepts_matching_etag(tmp_path: Path) -> None:
    body = b"model bytes"
    with _mock_client(body, hashlib.sha256(body).hexdigest()) as c:
        saved = c.download("m@1", tmp_path / "a.bin")
    assert saved.read_bytes() == body


def test_download_with_mismatched_etag_fails_and_leaves_nothing(tmp_path: Path) -> None:
    expected = hashlib.sha256(b"the real model").hexdigest()
    with (
        _mock_client(b"corrupted bytes", expected) as c,
        pytest.raises(ModelplaneError, match="corrupt"),
    ):
        c.download("m@1", tmp_path / "a.bin")
    assert list(tmp_path.iterdir()) == []


def test_download_of_unknown_version_writes_nothing(
    client: Client, onnx_file: Path, tmp_path: Path
) -> None:
    add_versions(client, "m", onnx_file, 1)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NotFound, match="version 7"):
        client.download("m@7", out)
    assert list(out.iterdir()) == []


def test_download_to_folder_keeps_a_filename_that_needs_quoting(
    client: Client, tmp_path: Path, onnx_bytes: bytes
) -> None:
    src = tmp_path / "my model.onnx"
    src.write_bytes(onnx_bytes)
    client.create_model("m")
    client.upload_version("m", src, "onnx")
    out = tmp_path / "out"
    out.mkdir()
    assert client.download("m@1", out) == out / "m-v1-my model.onnx"


# -- versions ----------------------------------------------------------------------
def test_get_version_by_number_alias_and_latest(client: Client, onnx_file: Path) -> None:
    add_versions(client, "m", onnx_file, 2)
    client.set_alias("m", "production", 1)

    assert client.get_version("m").version == 2
    assert client.get_version("m@latest").version == 2
    assert client.get_version("m@2").version == 2
    prod = client.get_version("m@production")
    assert (prod.version, prod.aliases) == (1, ["production"])
    with pytest.raises(NotFound, match="alias 'staging'"):
        client.get_version("m@staging")
    with pytest.raises(InvalidInput, match="nothing after '@'"):
        client.get_version("m@")


def test_update_version_adds_metrics_but_never_changes_them(
    client: Client, onnx_file: Path
) -> None:
    add_versions(client, "m", onnx_file, 1)
    client.upload_version("m", onnx_file, "onnx", metrics={"acc": 0.9}, tags={"a": "1"})
    client.set_alias("m", "candidate", 2)

    v = client.update_version("m@candidate", metrics={"f1": 0.8, "acc": 0.9})
    assert v.metrics == {"acc": 0.9, "f1": 0.8}  # re-sending the same value is fine

    with pytest.raises(Conflict, match="acc"):
        client.update_version("m@2", metrics={"acc": 0.95})
    assert client.get_version("m@2").metrics == {"acc": 0.9, "f1": 0.8}

    v = client.update_version("m@2", tags={"b": "2"}, remove_tags=["a"], description="checked")
    assert (v.tags, v.description) == ({"b": "2"}, "checked")
    assert client.get_version("m@1").tags == {}  # other versions untouched


def test_update_version_refuses_an_empty_selector(client: Client, onnx_file: Path) -> None:
    add_versions(client, "m", onnx_file, 1)
    with pytest.raises(InvalidInput):
        client.update_version("m@", description="meant for an alias")


def test_delete_version(client: Client, onnx_file: Path) -> None:
    add_versions(client, "m", onnx_file, 2)
    client.set_alias("m", "production", 2)

    with pytest.raises(Conflict, match="production"):
        client.delete_version("m", 2)

    client.set_alias("m", "production", 1)
    client.delete_version("m", 2)
    with pytest.raises(NotFound):
        client.get_version("m@2")
    assert [v.version for v in client.list_versions("m")] == [1]
    assert client.upload_version("m", onnx_file, "onnx").version == 3  # numbers not reused


# -- aliases and lineage -------------------------------------------------------------
def test_alias_set_list_rollback_history_delete(client: Client, onnx_file: Path) -> None:
    add_versions(client, "m", onnx_file, 3)

    assert client.set_alias("m", "production", 1).version == 1
    client.set_alias("m", "staging", 3)
    client.set_alias("m", "production", 2)
    assert [(a.alias, a.version) for a in client.list_aliases("m")] == [
        ("production", 2),
        ("staging", 3),
    ]

    assert client.rollback_alias("m", "production").version == 1
    assert client.get_version("m@production").version == 1
    with pytest.raises(Conflict, match="no earlier target"):
        client.rollback_alias("m", "production")

    client.delete_alias("m", "production")
    assert [a.alias for a in client.list_aliases("m")] == ["staging"]
    with pytest.raises(NotFound):
        client.get_version("m@production")
    with pytest.raises(NotFound):
        client.delete_alias("m", "production")

    history = [
        (e.action, e.from_version, e.to_version) for e in client.alias_history("m", "production")
    ]
    assert history == [
        ("delete", 1, None),
        ("rollback", 2, 1),
        ("move", 1, 2),
        ("set", None, 1),
    ]
    assert [e.alias for e in client.alias_history("m")] == [
        "production",
        "production",
        "production",
        "staging",
        "production",
    ]


def test_lineage_follows_parents_both_ways(client: Client, onnx_file: Path) -> None:
    add_versions(client, "base", onnx_file, 1)
    client.create_model("child")
    client.upload_version("child", onnx_file, "onnx", parents=["base@1"])
    client.create_model("grandchild")
    client.upload_version("grandchild", onnx_file, "onnx", parents=["child"])

    down = client.lineage("base@1")
    assert (down.model, down.version, down.ancestors) == ("base", 1, [])
    assert [(n.model, n.version, n.depth) for n in down.descendants] == [
        ("child", 1, 1),
        ("grandchild", 1, 2),
    ]
    up = client.lineage("grandchild")
    assert [(n.model, n.version, n.depth) for n in up.ancestors] == [
        ("child", 1, 1),
        ("base", 1, 2),
    ]
    assert up.descendants == []


# -- errors and configuration ------------------------------------------------------
def test_server_errors_map_to_error_classes(client: Client, onnx_file: Path) -> None:
    with pytest.raises(NotFound) as not_found:
        client.get_model("nope")
    assert (not_found.value.status, not_found.value.message) == (404, "model 'nope' not found")

    client.create_model("m")
    with pytest.raises(Conflict) as conflict:
        client.create_model("m")
    assert conflict.value.status == 409
    assert conflict.value.message == "model 'm' already exists"

    with pytest.raises(InvalidInput) as invalid:
        client.create_model("Bad Name")
    assert invalid.value.status == 422
    assert "invalid model name 'Bad Name'" in invalid.value.message

    with pytest.raises(InvalidInput, match="unknown format 'keras'"):
        client.upload_version("m", onnx_file, "keras")
    with pytest.raises(InvalidInput, match=r"metrics\.acc"):
        client.upload_version("m", onnx_file, "onnx", metrics={"acc": "high"})  # type: ignore[dict-item]
    with pytest.raises(NotFound, match="model 'ghost' not found"):
        client.upload_version("ghost", onnx_file, "onnx")
    assert client.get_model("m").latest_version is None  # nothing was stored


def test_client_reads_url_from_environment(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPLANE_URL", server.url + "/")
    monkeypatch.delenv("MODELPLANE_API_KEY", raising=False)
    with modelplane.Client() as c:
        assert c.url == server.url
        assert c.health()["status"] == "ok"
        c.create_model("from-env")
    with Client(server.url) as explicit:
        assert explicit.get_model("from-env").name == "from-env"


def test_client_sends_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(404, json={"error": "model 'x' not found"})

    monkeypatch.setenv("MODELPLANE_API_KEY", "mp_secret")
    with (
        Client("http://127.0.0.1:9", transport=httpx.MockTransport(handler)) as c,
        pytest.raises(NotFound, match="model 'x' not found"),
    ):
        c.get_model("x")
    assert seen == ["Bearer mp_secret"]
