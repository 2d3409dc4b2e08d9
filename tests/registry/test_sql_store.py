"""The registry store contract; every test runs on SQLite and on PostgreSQL (``store`` fixture)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from modelplane.db import make_engine, upgrade
from modelplane.errors import BadRequest, Conflict, InvalidInput, NotFound
from modelplane.registry import SqlRegistryStore
from modelplane.registry.names import ModelRef, parse_ref
from modelplane.registry.sql_store import encode_token
from modelplane.schemas.registry import Artifact, Lineage, Model, NewVersion, Signature, TensorSpec
from tests.conftest import pg_schema_url

T = "default"
SHA = "a" * 64
Item = TypeVar("Item")


def new_version(sha: str = SHA, **fields: Any) -> NewVersion:
    artifact = Artifact(sha256=sha, size=3, packaging="file", filename="model.onnx")
    return NewVersion(format="onnx", artifact=artifact, **fields)


def add_model(
    store: SqlRegistryStore,
    name: str = "m",
    *,
    tenant: str = T,
    task: str = "",
    tags: dict[str, str] | None = None,
) -> Model:
    return store.create_model(tenant, name, f"about {name}", task, tags or {})


def add_versions(store: SqlRegistryStore, model: str = "m", count: int = 1) -> list[int]:
    return [store.create_version(T, model, new_version(), "alice").version for _ in range(count)]


def all_pages(
    fetch: Callable[[str | None], tuple[list[Item], str | None]],
) -> list[list[Item]]:
    """Follow page tokens to the end; each page as returned."""
    pages: list[list[Item]] = []
    token: str | None = None
    while True:
        items, token = fetch(token)
        pages.append(items)
        if token is None:
            return pages
        assert len(pages) < 50, "page tokens never run out"


def version_numbers(store: SqlRegistryStore, model: str = "m") -> list[int]:
    versions, _ = store.list_versions(T, model, descending=False)
    return [v.version for v in versions]


def history(
    store: SqlRegistryStore, model: str = "m", alias: str | None = None
) -> list[tuple[Any, ...]]:
    events, _ = store.alias_history(T, model, alias)
    return [(e.action, e.alias, e.from_version, e.to_version, e.actor) for e in events]


def nodes(lineage: Lineage, side: str) -> list[tuple[int, str, int]]:
    return sorted((n.depth, n.model, n.version) for n in getattr(lineage, side))


# -- models ------------------------------------------------------------------


def test_created_model_reads_back(store: SqlRegistryStore) -> None:
    created = add_model(store, "bert-base", task="fill-mask", tags={"team": "nlp"})
    got = store.get_model(T, "bert-base")
    assert got == created
    assert (got.name, got.description, got.task, got.tags) == (
        "bert-base",
        "about bert-base",
        "fill-mask",
        {"team": "nlp"},
    )
    assert got.latest_version is None
    assert got.created_at.tzinfo is not None


def test_duplicate_model_name_is_a_conflict(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    with pytest.raises(Conflict, match="already exists"):
        add_model(store, "m")


def test_concurrent_creates_of_one_name_make_exactly_one_model(store: SqlRegistryStore) -> None:
    barrier = threading.Barrier(8, timeout=30)

    def create(_: int) -> str:
        barrier.wait()
        try:
            add_model(store, "race")
        except Conflict:
            return "conflict"
        return "created"

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(create, range(8)))
    assert outcomes == ["conflict"] * 7 + ["created"]
    assert [m.name for m in store.list_models(T)[0]] == ["race"]


def test_update_model_changes_fields_and_merges_tags(store: SqlRegistryStore) -> None:
    before = add_model(store, "m", task="old", tags={"keep": "1", "drop": "2", "change": "a"})
    updated = store.update_model(
        T, "m", description="new text", task="classify", tags={"change": "b", "add": "c"}
    )
    assert (updated.description, updated.task) == ("new text", "classify")
    assert updated.tags == {"keep": "1", "drop": "2", "change": "b", "add": "c"}
    assert updated.updated_at >= before.updated_at

    removed = store.update_model(T, "m", remove_tags=["drop", "not-there"])
    assert removed.tags == {"keep": "1", "change": "b", "add": "c"}
    assert store.get_model(T, "m") == removed


def test_update_model_leaves_unmentioned_fields_alone(store: SqlRegistryStore) -> None:
    add_model(store, "m", task="classify", tags={"a": "1"})
    updated = store.update_model(T, "m", description="only this")
    assert (updated.task, updated.tags, updated.description) == (
        "classify",
        {"a": "1"},
        "only this",
    )


def test_deleted_model_is_gone(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_model(store, "other")
    store.delete_model(T, "m")
    with pytest.raises(NotFound):
        store.get_model(T, "m")
    assert [m.name for m in store.list_models(T)[0]] == ["other"]


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: s.get_model(T, "nope"), id="get"),
        pytest.param(lambda s: s.update_model(T, "nope", description="x"), id="update"),
        pytest.param(lambda s: s.delete_model(T, "nope"), id="delete"),
        pytest.param(lambda s: s.create_version(T, "nope", new_version(), "a"), id="add-version"),
        pytest.param(lambda s: s.list_versions(T, "nope"), id="list-versions"),
        pytest.param(lambda s: s.list_aliases(T, "nope"), id="list-aliases"),
        pytest.param(lambda s: s.alias_history(T, "nope"), id="history"),
    ],
)
def test_unknown_model_is_not_found(
    store: SqlRegistryStore, call: Callable[[SqlRegistryStore], object]
) -> None:
    with pytest.raises(NotFound, match="nope"):
        call(store)


def test_model_reports_its_latest_version(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 3)
    assert store.get_model(T, "m").latest_version == 3
    assert store.list_models(T)[0][0].latest_version == 3


# -- listing models ------------------------------------------------------------


def names(models: list[Model]) -> list[str]:
    return [m.name for m in models]


def test_list_models_by_prefix(store: SqlRegistryStore) -> None:
    for name in ("alpha", "alpha-2", "alphabet", "al", "beta", "xalpha"):
        add_model(store, name)
    assert names(store.list_models(T, prefix="alpha")[0]) == ["alpha", "alpha-2", "alphabet"]
    assert names(store.list_models(T, prefix="al")[0]) == ["al", "alpha", "alpha-2", "alphabet"]
    assert names(store.list_models(T, prefix="zzz")[0]) == []


@pytest.mark.postgres
def test_list_models_by_prefix_under_a_language_collation() -> None:
    """Many PostgreSQL clusters are created with a language collation (en_US), not C."""
    with pg_schema_url() as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            with engine.begin() as c:
                icu = "select 1 from pg_collation where collname = 'en-US-x-icu'"
                if c.execute(text(icu)).first() is None:
                    pytest.skip("this PostgreSQL has no ICU en-US collation")
                alter = 'ALTER TABLE models ALTER COLUMN name TYPE varchar(128) COLLATE "{}"'
                c.execute(text(alter.format("en-US-x-icu")))
            store = SqlRegistryStore(engine)
            for name in ("alpha", "alpha-2", "alphabet", "beta"):
                add_model(store, name)
            assert names(store.list_models(T, prefix="alpha")[0]) == [
                "alpha",
                "alpha-2",
                "alphabet",
            ]
        finally:
            engine.dispose()


def test_list_models_by_tag_key_or_key_value(store: SqlRegistryStore) -> None:
    add_model(store, "a", tags={"team": "nlp"})
    add_model(store, "b", tags={"team": "cv", "stage": "prod"})
    add_model(store, "c", tags={"stage": "dev"})
    add_model(store, "d")
    assert names(store.list_models(T, tag="team")[0]) == ["a", "b"]
    assert names(store.list_models(T, tag="team=nlp")[0]) == ["a"]
    assert names(store.list_models(T, tag="stage=prod")[0]) == ["b"]
    assert names(store.list_models(T, tag="stage=staging")[0]) == []
    assert names(store.list_models(T, tag="owner")[0]) == []


def test_list_models_by_task_combines_with_other_filters(store: SqlRegistryStore) -> None:
    add_model(store, "img-a", task="image-classification", tags={"team": "cv"})
    add_model(store, "img-b", task="image-classification")
    add_model(store, "txt-a", task="text-classification", tags={"team": "cv"})
    assert names(store.list_models(T, task="image-classification")[0]) == ["img-a", "img-b"]
    assert names(store.list_models(T, task="image-classification", tag="team")[0]) == ["img-a"]
    assert names(store.list_models(T, task="text-classification", prefix="img")[0]) == []


@pytest.mark.parametrize("count", [6, 7])
def test_list_models_pages_cover_everything_once(store: SqlRegistryStore, count: int) -> None:
    expected = [f"model-{i:02d}" for i in range(count)]
    for name in reversed(expected):
        add_model(store, name)
    pages = all_pages(lambda token: store.list_models(T, limit=3, page_token=token))
    assert [len(p) for p in pages] == [3, 3] + ([1] if count == 7 else [])
    assert [m.name for page in pages for m in page] == expected


def test_list_models_pages_respect_filters(store: SqlRegistryStore) -> None:
    for i in range(5):
        add_model(store, f"keep-{i}", tags={"k": "v"})
        add_model(store, f"keep-{i}-untagged")
    pages = all_pages(lambda token: store.list_models(T, tag="k=v", limit=2, page_token=token))
    assert [m.name for page in pages for m in page] == [f"keep-{i}" for i in range(5)]


@pytest.mark.parametrize("token", ["not a token!", "a", "%%%"])
def test_list_models_refuses_a_garbled_page_token(store: SqlRegistryStore, token: str) -> None:
    with pytest.raises(BadRequest, match="page_token"):
        store.list_models(T, page_token=token)


# -- versions ------------------------------------------------------------------


def test_versions_are_numbered_per_model(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_model(store, "n")
    assert add_versions(store, "m", 3) == [1, 2, 3]
    assert add_versions(store, "n", 2) == [1, 2]
    assert add_versions(store, "m", 1) == [4]


def test_version_numbers_are_never_reused(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 3)
    store.delete_version(T, "m", 3)
    assert store.get_version(T, ModelRef("m")).version == 2
    assert add_versions(store, "m", 1) == [4]
    for number in (1, 2, 4):
        store.delete_version(T, "m", number)
    assert version_numbers(store) == []
    assert add_versions(store, "m", 1) == [5]
    with pytest.raises(NotFound):
        store.get_version(T, ModelRef("m", version=3))


def test_version_records_what_was_uploaded(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    signature = Signature(inputs=[TensorSpec(name="x", dtype="float32", shape=[-1, 4])])
    new = NewVersion(
        format="onnx",
        artifact=Artifact(
            sha256="b" * 64, size=42, packaging="tar", filename="m.tar", files={"a/m.onnx": 42}
        ),
        signature=signature,
        params={"lr": 0.1, "layers": [1, 2]},
        metrics={"acc": 0.9},
        tags={"stage": "dev"},
        description="first",
        source={"git": "abc"},
    )
    created = store.create_version(T, "m", new, "alice")
    got = store.get_version(T, ModelRef("m", version=1))
    assert got == created
    assert got.artifact == new.artifact
    assert got.signature == signature
    assert (got.params, got.metrics, got.tags) == (new.params, new.metrics, new.tags)
    assert (got.description, got.source, got.created_by) == ("first", {"git": "abc"}, "alice")
    assert (got.model, got.format, got.parents, got.aliases) == ("m", "onnx", [], [])


def test_refs_resolve_latest_number_and_alias(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 3)
    store.set_alias(T, "m", "prod", 2, "alice")
    assert store.get_version(T, ModelRef("m")).version == 3
    assert store.get_version(T, parse_ref("m@latest")).version == 3
    assert store.get_version(T, ModelRef("m", version=1)).version == 1
    prod = store.get_version(T, ModelRef("m", alias="prod"))
    assert (prod.version, prod.aliases) == (2, ["prod"])


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (ModelRef("m", version=9), "version 9"),
        (ModelRef("m", alias="nope"), "alias 'nope'"),
        (ModelRef("nope"), "model 'nope'"),
        (ModelRef("empty"), "no versions"),
    ],
    ids=["version", "alias", "model", "no-versions"],
)
def test_unresolvable_ref_is_not_found(
    store: SqlRegistryStore, ref: ModelRef, message: str
) -> None:
    add_model(store, "m")
    add_model(store, "empty")
    add_versions(store, "m", 2)
    with pytest.raises(NotFound, match=message):
        store.get_version(T, ref)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: s.get_version(T, parse_ref("m@99999999999999999999")), id="get"),
        pytest.param(lambda s: s.set_alias(T, "m", "prod", 10**20, "a"), id="set-alias"),
        pytest.param(lambda s: s.delete_version(T, "m", 10**20), id="delete"),
    ],
)
def test_huge_version_number_is_not_found(
    store: SqlRegistryStore, call: Callable[[SqlRegistryStore], object]
) -> None:
    add_model(store, "m")
    add_versions(store, "m", 1)
    with pytest.raises((NotFound, InvalidInput)):
        call(store)


def test_list_versions_order_and_pages(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 7)
    store.delete_version(T, "m", 4)

    newest_first = all_pages(lambda token: store.list_versions(T, "m", limit=2, page_token=token))
    assert [[v.version for v in page] for page in newest_first] == [[7, 6], [5, 3], [2, 1]]

    oldest_first = all_pages(
        lambda token: store.list_versions(T, "m", limit=4, page_token=token, descending=False)
    )
    assert [[v.version for v in page] for page in oldest_first] == [[1, 2, 3, 5], [6, 7]]


def test_list_versions_by_tag(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    store.create_version(T, "m", new_version(tags={"stage": "dev"}), "a")
    store.create_version(T, "m", new_version(tags={"stage": "prod"}), "a")
    store.create_version(T, "m", new_version(), "a")
    assert [v.version for v in store.list_versions(T, "m", tag="stage")[0]] == [2, 1]
    assert [v.version for v in store.list_versions(T, "m", tag="stage=prod")[0]] == [2]


@pytest.mark.parametrize("token", ["not a token!", encode_token("x")])
def test_list_versions_refuses_a_bad_page_token(store: SqlRegistryStore, token: str) -> None:
    add_model(store, "m")
    with pytest.raises(BadRequest, match="page_token"):
        store.list_versions(T, "m", page_token=token)


def test_metrics_can_be_added_but_never_changed(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    store.create_version(T, "m", new_version(metrics={"acc": 0.9}), "a")
    ref = ModelRef("m", version=1)

    added = store.update_version(T, ref, metrics={"f1": 0.8})
    assert added.metrics == {"acc": 0.9, "f1": 0.8}
    same = store.update_version(T, ref, metrics={"acc": 0.9, "loss": 0.3})
    assert same.metrics == {"acc": 0.9, "f1": 0.8, "loss": 0.3}

    with pytest.raises(Conflict, match="acc"):
        store.update_version(T, ref, metrics={"acc": 0.95, "new": 1.0})
    assert store.get_version(T, ref).metrics == {"acc": 0.9, "f1": 0.8, "loss": 0.3}


def test_version_tags_and_description_can_change(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    store.create_version(T, "m", new_version(tags={"a": "1", "b": "2"}), "a")
    updated = store.update_version(
        T, ModelRef("m"), tags={"b": "3", "c": "4"}, remove_tags=["a"], description="better"
    )
    assert (updated.tags, updated.description) == ({"b": "3", "c": "4"}, "better")
    assert store.get_version(T, ModelRef("m", version=1)) == updated


def test_update_version_by_alias(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 2)
    store.set_alias(T, "m", "prod", 1, "a")
    store.update_version(T, ModelRef("m", alias="prod"), tags={"via": "alias"})
    assert store.get_version(T, ModelRef("m", version=1)).tags == {"via": "alias"}
    assert store.get_version(T, ModelRef("m", version=2)).tags == {}


def test_version_held_by_an_alias_cannot_be_deleted(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 2)
    store.set_alias(T, "m", "prod", 1, "a")
    with pytest.raises(Conflict, match="prod"):
        store.delete_version(T, "m", 1)
    assert version_numbers(store) == [1, 2]

    store.set_alias(T, "m", "prod", 2, "a")
    store.delete_version(T, "m", 1)
    assert version_numbers(store) == [2]


def test_deleting_an_unknown_version_is_not_found(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 1)
    with pytest.raises(NotFound):
        store.delete_version(T, "m", 2)


def test_concurrent_uploads_get_distinct_consecutive_numbers(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    barrier = threading.Barrier(8, timeout=30)

    def upload(_: int) -> list[int]:
        barrier.wait()
        return [store.create_version(T, "m", new_version(), "w").version for _ in range(5)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(upload, range(8)))  # re-raises any worker's error
    assert sorted(n for numbers in results for n in numbers) == list(range(1, 41))
    assert version_numbers(store) == list(range(1, 41))


# -- lineage -------------------------------------------------------------------


def test_parents_are_recorded_across_models(store: SqlRegistryStore) -> None:
    add_model(store, "base")
    add_model(store, "tuned")
    add_versions(store, "base", 2)
    store.set_alias(T, "base", "prod", 1, "a")
    child = store.create_version(
        T, "tuned", new_version(parents=["base@2", "base@prod", "base@2"]), "a"
    )
    assert child.parents == ["base@1", "base@2"]
    assert store.get_version(T, ModelRef("tuned")).parents == ["base@1", "base@2"]


def test_unknown_parent_refuses_the_version_and_burns_no_number(
    store: SqlRegistryStore,
) -> None:
    add_model(store, "m")
    add_versions(store, "m", 1)
    with pytest.raises(NotFound, match="ghost"):
        store.create_version(T, "m", new_version(parents=["ghost@1"]), "a")
    with pytest.raises(NotFound, match="version 7"):
        store.create_version(T, "m", new_version(parents=["m@7"]), "a")
    assert version_numbers(store) == [1]
    assert add_versions(store, "m", 1) == [2]


def diamond(store: SqlRegistryStore) -> None:
    """data@1 -> base@1 -> {ft-a@1, ft-b@1} -> merged@1, plus an unrelated base@2."""
    for name in ("data", "base", "ft-a", "ft-b", "merged"):
        add_model(store, name)
    add_versions(store, "data", 1)
    store.create_version(T, "base", new_version(parents=["data@1"]), "a")
    add_versions(store, "base", 1)
    store.create_version(T, "ft-a", new_version(parents=["base@1"]), "a")
    store.create_version(T, "ft-b", new_version(parents=["base@1"]), "a")
    store.create_version(T, "merged", new_version(parents=["ft-a@1", "ft-b@1"]), "a")


def test_lineage_walks_both_ways_with_depths(store: SqlRegistryStore) -> None:
    diamond(store)
    middle = store.lineage(T, ModelRef("base", version=1))
    assert (middle.model, middle.version) == ("base", 1)
    assert nodes(middle, "ancestors") == [(1, "data", 1)]
    assert nodes(middle, "descendants") == [(1, "ft-a", 1), (1, "ft-b", 1), (2, "merged", 1)]

    leaf = store.lineage(T, ModelRef("merged"))
    assert nodes(leaf, "ancestors") == [
        (1, "ft-a", 1),
        (1, "ft-b", 1),
        (2, "base", 1),
        (3, "data", 1),
    ]
    assert nodes(leaf, "descendants") == []

    unrelated = store.lineage(T, ModelRef("base", version=2))
    assert (unrelated.ancestors, unrelated.descendants) == ([], [])


def test_lineage_stops_at_max_depth(store: SqlRegistryStore) -> None:
    diamond(store)
    leaf = store.lineage(T, ModelRef("merged"), max_depth=2)
    assert nodes(leaf, "ancestors") == [(1, "ft-a", 1), (1, "ft-b", 1), (2, "base", 1)]


def test_lineage_of_unknown_version_is_not_found(store: SqlRegistryStore) -> None:
    diamond(store)
    with pytest.raises(NotFound):
        store.lineage(T, ModelRef("base", version=9))


def test_deleting_a_parent_drops_the_link(store: SqlRegistryStore) -> None:
    diamond(store)
    store.delete_version(T, "ft-b", 1)
    assert store.get_version(T, ModelRef("merged")).parents == ["ft-a@1"]
    leaf = store.lineage(T, ModelRef("merged"))
    assert nodes(leaf, "ancestors") == [(1, "ft-a", 1), (2, "base", 1), (3, "data", 1)]


# -- aliases -------------------------------------------------------------------


def test_alias_history_records_set_move_delete_newest_first(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 2)
    store.set_alias(T, "m", "prod", 1, "alice")
    moved = store.set_alias(T, "m", "prod", 2, "bob")
    assert (moved.alias, moved.version) == ("prod", 2)
    store.delete_alias(T, "m", "prod", "carol")
    assert history(store) == [
        ("delete", "prod", 2, None, "carol"),
        ("move", "prod", 1, 2, "bob"),
        ("set", "prod", None, 1, "alice"),
    ]
    assert store.list_aliases(T, "m") == []
    with pytest.raises(NotFound):
        store.get_version(T, ModelRef("m", alias="prod"))


def test_alias_history_filters_by_alias_and_pages(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 3)
    for number in (1, 2, 3, 1, 2):
        store.set_alias(T, "m", "prod", number, "a")
        store.set_alias(T, "m", "dev", number, "a")

    prod = history(store, alias="prod")
    assert [(action, to) for action, _, _, to, _ in prod] == [
        ("move", 2),
        ("move", 1),
        ("move", 3),
        ("move", 2),
        ("set", 1),
    ]
    assert {alias for _, alias, *_ in history(store)} == {"prod", "dev"}

    pages = all_pages(lambda token: store.alias_history(T, "m", "prod", limit=2, page_token=token))
    assert [len(p) for p in pages] == [2, 2, 1]
    paged = [(e.action, e.alias, e.from_version, e.to_version, e.actor) for p in pages for e in p]
    assert paged == prod
    assert len({e.id for p in pages for e in p}) == 5


def test_alias_history_refuses_a_bad_page_token(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    with pytest.raises(BadRequest, match="page_token"):
        store.alias_history(T, "m", page_token=encode_token("x"))


def test_list_aliases(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 2)
    store.set_alias(T, "m", "staging", 2, "a")
    store.set_alias(T, "m", "prod", 1, "a")
    aliases = store.list_aliases(T, "m")
    assert [(a.alias, a.version) for a in aliases] == [("prod", 1), ("staging", 2)]
    assert store.get_version(T, ModelRef("m", version=2)).aliases == ["staging"]


def test_alias_to_unknown_version_or_unknown_alias_is_not_found(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 1)
    with pytest.raises(NotFound, match="version 5"):
        store.set_alias(T, "m", "prod", 5, "a")
    with pytest.raises(NotFound, match="prod"):
        store.delete_alias(T, "m", "prod", "a")
    assert history(store) == []


def test_rollback_walks_back_one_target_at_a_time(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 3)
    for number in (1, 2, 3):
        store.set_alias(T, "m", "prod", number, "alice")

    assert store.rollback_alias(T, "m", "prod", "bob").version == 2
    assert store.get_version(T, ModelRef("m", alias="prod")).version == 2
    assert store.rollback_alias(T, "m", "prod", "bob").version == 1
    with pytest.raises(Conflict, match="no earlier target"):
        store.rollback_alias(T, "m", "prod", "bob")
    assert store.get_version(T, ModelRef("m", alias="prod")).version == 1

    assert history(store)[:2] == [
        ("rollback", "prod", 2, 1, "bob"),
        ("rollback", "prod", 3, 2, "bob"),
    ]


def test_rollback_after_a_new_move_returns_to_the_target_before_it(
    store: SqlRegistryStore,
) -> None:
    add_model(store, "m")
    add_versions(store, "m", 3)
    store.set_alias(T, "m", "prod", 1, "a")
    store.set_alias(T, "m", "prod", 2, "a")
    store.rollback_alias(T, "m", "prod", "a")  # back on 1
    store.set_alias(T, "m", "prod", 3, "a")
    assert store.rollback_alias(T, "m", "prod", "a").version == 1


def test_delete_clears_what_rollback_can_return_to(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 3)
    store.set_alias(T, "m", "prod", 1, "a")
    store.set_alias(T, "m", "prod", 2, "a")
    store.delete_alias(T, "m", "prod", "a")
    with pytest.raises(NotFound):
        store.rollback_alias(T, "m", "prod", "a")
    store.set_alias(T, "m", "prod", 3, "a")
    with pytest.raises(Conflict):
        store.rollback_alias(T, "m", "prod", "a")
    assert store.get_version(T, ModelRef("m", alias="prod")).version == 3


def test_rollback_of_unknown_alias_is_not_found(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_versions(store, "m", 1)
    store.set_alias(T, "m", "prod", 1, "a")
    with pytest.raises(NotFound, match="staging"):
        store.rollback_alias(T, "m", "staging", "a")


# -- tenants -------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: s.get_model("b", "m"), id="get-model"),
        pytest.param(lambda s: s.update_model("b", "m", task="x"), id="update-model"),
        pytest.param(lambda s: s.delete_model("b", "m"), id="delete-model"),
        pytest.param(lambda s: s.create_version("b", "m", new_version(), "x"), id="add-version"),
        pytest.param(lambda s: s.get_version("b", ModelRef("m", version=1)), id="get-version"),
        pytest.param(lambda s: s.get_version("b", ModelRef("m", alias="prod")), id="get-alias"),
        pytest.param(lambda s: s.list_versions("b", "m"), id="list-versions"),
        pytest.param(lambda s: s.update_version("b", ModelRef("m"), tags={"x": "y"}), id="tag"),
        pytest.param(lambda s: s.delete_version("b", "m", 1), id="delete-version"),
        pytest.param(lambda s: s.set_alias("b", "m", "prod", 1, "x"), id="set-alias"),
        pytest.param(lambda s: s.delete_alias("b", "m", "prod", "x"), id="delete-alias"),
        pytest.param(lambda s: s.rollback_alias("b", "m", "prod", "x"), id="rollback"),
        pytest.param(lambda s: s.alias_history("b", "m"), id="history"),
        pytest.param(lambda s: s.lineage("b", ModelRef("m")), id="lineage"),
    ],
)
def test_another_tenants_model_is_not_found(
    store: SqlRegistryStore, call: Callable[[SqlRegistryStore], object]
) -> None:
    add_model(store, "m", tenant="a")
    store.create_version("a", "m", new_version(), "x")
    store.set_alias("a", "m", "prod", 1, "x")
    with pytest.raises(NotFound):
        call(store)
    assert store.get_version("a", ModelRef("m", alias="prod")).version == 1
    assert store.list_models("b") == ([], None)


def test_tenants_may_share_a_model_name(store: SqlRegistryStore) -> None:
    add_model(store, "m", tenant="a", task="first")
    add_model(store, "m", tenant="b", task="second")
    for _ in range(2):
        store.create_version("a", "m", new_version(), "x")
    assert store.create_version("b", "m", new_version(), "x").version == 1
    assert store.get_model("a", "m").task == "first"
    assert store.get_model("b", "m").latest_version == 1
    store.delete_model("a", "m")
    assert store.get_model("b", "m").task == "second"


def test_parents_resolve_inside_the_tenant_only(store: SqlRegistryStore) -> None:
    add_model(store, "base", tenant="a")
    store.create_version("a", "base", new_version(), "x")
    add_model(store, "tuned", tenant="b")
    with pytest.raises(NotFound, match="base"):
        store.create_version("b", "tuned", new_version(parents=["base@1"]), "x")


# -- deletion and blobs --------------------------------------------------------


def test_delete_model_removes_its_versions_aliases_and_history(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_model(store, "child")
    store.create_version(T, "m", new_version(sha="1" * 64), "a")
    store.create_version(T, "child", new_version(sha="2" * 64, parents=["m@1"]), "a")
    store.set_alias(T, "m", "prod", 1, "a")
    store.set_alias(T, "m", "prod", 1, "a")

    store.delete_model(T, "m")

    assert store.referenced_blobs() == {"2" * 64}
    assert store.get_version(T, ModelRef("child")).parents == []
    assert nodes(store.lineage(T, ModelRef("child")), "ancestors") == []
    add_model(store, "m")
    assert store.list_versions(T, "m") == ([], None)
    assert store.list_aliases(T, "m") == []
    assert history(store) == []


def test_referenced_blobs_lists_every_artifact_in_use(store: SqlRegistryStore) -> None:
    add_model(store, "m")
    add_model(store, "m", tenant="other")
    store.create_version(T, "m", new_version(sha="1" * 64), "a")
    store.create_version(T, "m", new_version(sha="2" * 64), "a")
    store.create_version(T, "m", new_version(sha="2" * 64), "a")
    store.create_version("other", "m", new_version(sha="3" * 64), "a")
    assert store.referenced_blobs() == {"1" * 64, "2" * 64, "3" * 64}

    store.delete_version(T, "m", 2)
    assert store.referenced_blobs() == {"1" * 64, "2" * 64, "3" * 64}
    store.delete_version(T, "m", 3)
    store.delete_version(T, "m", 1)
    assert store.referenced_blobs() == {"3" * 64}
