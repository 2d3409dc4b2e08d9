"""Text generation with auth on: tenants, roles, sharing, OpenAI-shaped refusals, token usage."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.auth.conftest import Realm, bearer, start_realm  # noqa: F401 - a fixture
from tests.llm.served import deploy, publish, wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture
def realm(request: pytest.FixtureRequest) -> Realm:
    started: Realm = request.getfixturevalue("start_realm")()
    return started


def sdk(realm: Realm, key: str | None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{realm.url}/v1", api_key=key or "no-such-key", max_retries=0)


def test_tenants_roles_sharing_and_usage(realm: Realm, gpt2_dir: Path) -> None:
    for t in ("a", "b"):
        realm.tenant(t)
    maint_a = realm.key("a", "maintainer")
    user_a, user_b, viewer_a = (
        realm.key("a", "user"),
        realm.key("b", "user"),
        realm.key("a", "viewer"),
    )
    publish(realm.url, "tiny", gpt2_dir, key=maint_a)
    with httpx.Client(base_url=realm.url, headers=bearer(maint_a), timeout=60) as a:
        deploy(a, "tiny", "tiny")
        wait_ready(a, "tiny")

    with sdk(realm, user_a) as oa:
        r = oa.completions.create(model="tiny", prompt="the cat sat", max_tokens=40, temperature=0)
        assert r.choices[0].text == " on the mat and looked at the dog."
        chunks = list(
            oa.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=3,
                stream=True, stream_options={"include_usage": True},
            )
        )  # fmt: skip
        assert [m.id for m in oa.models.list()] == ["tiny"]
    used = [r.usage, chunks[-1].usage]

    with sdk(realm, user_b) as ob:
        for name in ("tiny", "a~tiny"):  # another tenant's deployment does not exist for b
            with pytest.raises(openai.NotFoundError) as nf:
                ob.completions.create(model=name, prompt="x", max_tokens=2)
            assert nf.value.response.json()["error"]["code"] == "model_not_found"
        assert list(ob.models.list()) == []
        with httpx.Client(base_url=realm.url, headers=bearer(maint_a)) as a:
            g = a.post("/api/v1/deployments/tiny/grants", json={"tenant": "b"})
            assert g.status_code == 201, g.text
        shared = ob.completions.create(model="a~tiny", prompt="one two", max_tokens=4)
        assert shared.model == "a~tiny" and shared.usage is not None
        assert shared.usage.completion_tokens == 4

    with pytest.raises(openai.AuthenticationError) as unauth:
        sdk(realm, None).completions.create(model="tiny", prompt="x")
    assert unauth.value.response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk(realm, viewer_a).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}]
        )
    assert denied.value.response.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(f"{realm.url}/v1/models", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"

    # token use is metered per tenant x deployment (the name the caller used)
    rows = realm.admin.get("/api/v1/usage", params={"group_by": "tenant,deployment"}).json()
    by = {(row["tenant"], row["deployment"]): row for row in rows["rows"]}
    mine = by[("a", "tiny")]
    assert mine["prompt_tokens"] == sum(u.prompt_tokens for u in used if u)
    assert mine["completion_tokens"] == sum(u.completion_tokens for u in used if u)
    assert by[("b", "a~tiny")]["completion_tokens"] == 4
