"""Tenant B's keys, of every role, try every Files and Vector Stores route against tenant A's ids, on SQLite and
Postgres: each answers exactly as it does for an id that never existed, B's lists never show A's rows, and A's
files, stores and search are unchanged afterwards."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from live import Live, Tenant

MISSING = {"file": "file-" + "0" * 24, "store": "vs_" + "0" * 24, "batch": "vsfb_" + "0" * 24}


@pytest.fixture(scope="module")
def a_world(server: Live) -> tuple[Tenant, Tenant, dict[str, str]]:
    a = server.new_tenant(f"kiso-a-{server.backend}")
    b = server.new_tenant(f"kiso-b-{server.backend}")
    sdk = server.sdk(a.member_key)
    made = sdk.files.create(file=("a-secret.txt", b"alpha secret about the A company"), purpose="assistants")
    store = sdk.vector_stores.create(name="a-store")
    batch = sdk.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[made.id])
    return a, b, {"file": made.id, "store": store.id, "batch": batch.id}


def _routes(ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any] | None]]:
    f, s, b = ids["file"], ids["store"], ids["batch"]
    return [
        ("GET", f"/v1/files/{f}", None), ("GET", f"/v1/files/{f}/content", None), ("DELETE", f"/v1/files/{f}", None),
        ("GET", f"/v1/vector_stores/{s}", None), ("POST", f"/v1/vector_stores/{s}", {"name": "pwned"}),
        ("DELETE", f"/v1/vector_stores/{s}", None), ("POST", f"/v1/vector_stores/{s}/search", {"query": "secret"}),
        ("GET", f"/v1/vector_stores/{s}/files", None), ("POST", f"/v1/vector_stores/{s}/files", {"file_id": f}),
        ("GET", f"/v1/vector_stores/{s}/files/{f}", None),
        ("POST", f"/v1/vector_stores/{s}/files/{f}", {"attributes": {"x": "y"}}),
        ("DELETE", f"/v1/vector_stores/{s}/files/{f}", None),
        ("GET", f"/v1/vector_stores/{s}/files/{f}/content", None),
        ("POST", f"/v1/vector_stores/{s}/file_batches", {"file_ids": [f]}),
        ("GET", f"/v1/vector_stores/{s}/file_batches/{b}", None),
        ("POST", f"/v1/vector_stores/{s}/file_batches/{b}/cancel", None),
        ("GET", f"/v1/vector_stores/{s}/file_batches/{b}/files", None),
    ]


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_b_cannot_reach_a_s_knowledge(server: Live, a_world: tuple[Tenant, Tenant, dict[str, str]],
                                      role: str) -> None:
    _a, b, ids = a_world
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {getattr(b, f'{role}_key')}"},
                      timeout=60) as c:
        for (method, path, body), (_, missing_path, missing_body) in zip(_routes(ids), _routes(MISSING),
                                                                         strict=True):
            foreign = c.request(method, path, json=body)
            absent = c.request(method, missing_path, json=missing_body)
            assert foreign.status_code == absent.status_code, (role, method, path, foreign.text, absent.text)
            assert foreign.status_code in (403, 404), (role, method, path, foreign.text)  # 403: viewer writing
            assert foreign.json()["error"]["code"] == absent.json()["error"]["code"]
            assert "a-secret" not in foreign.text and "alpha secret" not in foreign.text
        assert c.get("/v1/files").json()["data"] == []
        assert c.get("/v1/vector_stores").json()["data"] == []


def test_a_is_untouched(server: Live, a_world: tuple[Tenant, Tenant, dict[str, str]]) -> None:
    a, _b, ids = a_world
    sdk = server.sdk(a.member_key)
    assert sdk.files.content(ids["file"]).read() == b"alpha secret about the A company"
    store = sdk.vector_stores.retrieve(ids["store"])
    assert store.name == "a-store" and store.file_counts.total == 1
    assert [f.id for f in sdk.vector_stores.files.list(ids["store"]).data] == [ids["file"]]
