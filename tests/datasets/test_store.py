"""The dataset store; every test runs on SQLite and on PostgreSQL (``db_url`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from modelplane.datasets import DatasetStore, NewDataset
from modelplane.db import make_engine, upgrade
from modelplane.errors import BadRequest, Conflict, NotFound
from modelplane.schemas.datasets import Column, DatasetSchema

T = "default"


@pytest.fixture
def dstore(db_url: str) -> Iterator[DatasetStore]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield DatasetStore(engine)
    engine.dispose()


def new(name: str, sha: str = "a" * 64, **fields: object) -> NewDataset:
    schema = DatasetSchema(
        columns=[
            Column(name="x", dtype="float64"),
            Column(name="img", dtype="uint8", shape=[8, 8, 1]),
        ],
        rows=10,
        extra={"classes": {"0": 4, "1": 6}},
    )
    base: dict[str, object] = {
        "name": name,
        "format": "csv",
        "sha256": sha,
        "size": 123,
        "data_schema": schema,
    }
    return NewDataset.model_validate({**base, **fields})


def test_create_then_get_returns_everything(dstore: DatasetStore) -> None:
    made = dstore.create(T, new("iris", description="flowers", tags={"team": "ml"}), "alice")
    got = dstore.get(T, "iris")
    assert got == made
    assert got.name == "iris"
    assert got.format == "csv"
    assert got.sha256 == "a" * 64
    assert got.size == 123
    assert got.description == "flowers"
    assert got.tags == {"team": "ml"}
    assert got.created_by == "alice"
    assert got.created_at.tzinfo is not None
    assert got.schema_.rows == 10
    assert got.schema_.columns[1].shape == [8, 8, 1]
    assert got.schema_.extra == {"classes": {"0": 4, "1": 6}}
    assert got.model_dump(mode="json")["schema"]["rows"] == 10


def test_size_beyond_32_bits_is_kept(dstore: DatasetStore) -> None:
    dstore.create(T, new("big", size=9 * 1024**3), "a")
    assert dstore.get(T, "big").size == 9 * 1024**3


def test_duplicate_name_is_a_conflict(dstore: DatasetStore) -> None:
    dstore.create(T, new("iris"), "a")
    with pytest.raises(Conflict, match="dataset 'iris' already exists"):
        dstore.create(T, new("iris", sha="b" * 64), "a")
    assert dstore.get(T, "iris").sha256 == "a" * 64


def test_concurrent_creates_of_one_name_leave_one_winner(dstore: DatasetStore) -> None:
    def attempt(i: int) -> str:
        try:
            dstore.create(T, new("race", sha=f"{i:x}" * 64), f"user{i}")
            return "ok"
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert outcomes.count("ok") == 1
    assert outcomes.count("conflict") == 7


def test_tenants_do_not_see_each_other(dstore: DatasetStore) -> None:
    dstore.create("acme", new("iris", sha="1" * 64), "a")
    dstore.create("globex", new("iris", sha="2" * 64), "b")  # same name, other tenant: fine
    assert dstore.get("acme", "iris").sha256 == "1" * 64
    assert dstore.get("globex", "iris").sha256 == "2" * 64
    dstore.create("acme", new("only-acme"), "a")
    with pytest.raises(NotFound, match="dataset 'only-acme' not found"):
        dstore.get("globex", "only-acme")
    with pytest.raises(NotFound):
        dstore.delete("globex", "only-acme")
    assert [d.name for d in dstore.list("globex")[0]] == ["iris"]
    assert dstore.exists("acme", "only-acme")
    assert not dstore.exists("globex", "only-acme")


def test_list_is_sorted_paginated_and_filtered_by_prefix(dstore: DatasetStore) -> None:
    names = ["b-two", "a-one", "b-one", "c", "b-three"]
    for name in names:
        dstore.create(T, new(name), "a")
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        items, token = dstore.list(T, limit=2, page_token=token)
        seen += [d.name for d in items]
        pages += 1
        if token is None:
            break
    assert seen == sorted(names)
    assert pages == 3
    items, token = dstore.list(T, prefix="b-")
    assert [d.name for d in items] == ["b-one", "b-three", "b-two"]
    assert token is None
    items, token = dstore.list(T, prefix="b-", limit=3)
    assert token is None  # exactly one full page: no empty page after it


def test_prefix_wildcards_are_literal(dstore: DatasetStore) -> None:
    dstore.create(T, new("a_b"), "a")
    dstore.create(T, new("axb"), "a")
    assert [d.name for d in dstore.list(T, prefix="a_")[0]] == ["a_b"]


def test_invalid_page_token_is_bad_request(dstore: DatasetStore) -> None:
    with pytest.raises(BadRequest):
        dstore.list(T, page_token="%%%not-base64")


def test_delete_forgets_the_record(dstore: DatasetStore) -> None:
    dstore.create(T, new("iris"), "a")
    dstore.delete(T, "iris")
    with pytest.raises(NotFound):
        dstore.get(T, "iris")
    with pytest.raises(NotFound):
        dstore.delete(T, "iris")
    dstore.create(T, new("iris", sha="c" * 64), "a")  # the name is free again
    assert dstore.get(T, "iris").sha256 == "c" * 64


def test_referenced_blobs_lists_every_dataset_blob(dstore: DatasetStore) -> None:
    dstore.create("t1", new("a", sha="1" * 64), "x")
    dstore.create("t2", new("b", sha="1" * 64), "x")
    dstore.create("t2", new("c", sha="2" * 64), "x")
    assert dstore.referenced_blobs() == {"1" * 64, "2" * 64}
    dstore.delete("t2", "c")
    assert dstore.referenced_blobs() == {"1" * 64}
