from modelplane.registry import SqlRegistryStore
from modelplane.registry.names import ModelRef
from modelplane.schemas.registry import Artifact, NewVersion


def _new(sha: str = "a" * 64) -> NewVersion:
    return NewVersion(format="onnx", artifact=Artifact(sha256=sha, size=1, packaging="file", filename="m"))


def test_versions_are_numbered_and_aliases_resolve(store: SqlRegistryStore) -> None:
    store.create_model("default", "m", "", "", {})
    v1 = store.create_version("default", "m", _new(), "me")
    v2 = store.create_version("default", "m", _new(), "me")
    assert (v1.version, v2.version) == (1, 2)
    store.set_alias("default", "m", "prod", 1, "me")
    assert store.get_version("default", ModelRef("m", alias="prod")).version == 1
    assert store.get_version("default", ModelRef("m")).version == 2
