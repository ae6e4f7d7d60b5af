"""Prompts on every SQL backend, through the service with a real keyring: resolution order (pinned base version, the
override's production label on top, else the base's label), the cache dropped on every change, labels that move only
when put, overrides sealed at rest and re-sealed after a rotation, erasure, and one tenant never reaching another's
override."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tenantlm.crypto import Keyring, LocalKekProvider
from tenantlm.errors import InvalidRequest, NotFound
from tenantlm.prompts.service import PromptsService
from tenantlm.prompts.store import PromptStore
from tenantlm.storage.sql.engine import Database
from tenantlm.tenancy.models import Tenant, TenantStatus
from tenantlm.tenancy.store import TenancyStore

A, B = "ten_aaaa", "ten_bbbb"
BASE = "Hello {{name}}.{% block policy %} Base policy.{% endblock %}"
VARS = {"name": {"type": "string", "required": True}}


class Audit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str | None, dict[str, Any]]] = []

    async def append(self, *, actor: str, action: str, tenant_id: str | None, request_id: str | None,
                     details: dict[str, Any]) -> None:
        self.entries.append((action, tenant_id, details))


def _tenant(tid: str) -> Tenant:
    now = time.time()
    return Tenant(id=tid, name=f"name-{tid}", status=TenantStatus.ACTIVE, plan="free", region="local", metadata={},
                  settings={}, allowed_models=None, model_aliases={}, created_at=now, updated_at=now)


@pytest.fixture
async def rig(database: Database, tmp_path: Path) -> tuple[PromptsService, Keyring, Audit]:
    for tid in (A, B):
        await TenancyStore(database).insert_tenant(tenant_id=tid, tenant=_tenant(tid))
    keyring = Keyring(database, LocalKekProvider(tmp_path / "keyring", os.urandom(32)))
    audit = Audit()
    return PromptsService(store=PromptStore(database), sealer=keyring, audit=audit, ttl_s=3600), keyring, audit


async def _text(svc: PromptsService, tid: str, pid: str, version: str | None = None) -> str:
    ref: dict[str, Any] = {"id": pid, "variables": {"name": "Ada"}}
    if version is not None:
        ref["version"] = version
    rendered = await svc.render(tenant_id=tid, prompt=ref)
    assert rendered.instructions is not None
    return rendered.instructions


async def test_resolution_order_and_cache_invalidation(rig: tuple[PromptsService, Keyring, Audit]) -> None:
    svc, _, audit = rig
    pid = (await svc.create(body={"name": "p", "template": BASE, "variables": VARS}, actor="op", request_id=None))["id"]
    await svc.add_version(prompt_id=pid, body={"template": "V2 {{name}}.{% block policy %}{% endblock %}",
                                               "variables": VARS}, actor="op", request_id=None)
    assert await _text(svc, A, pid) == "Hello Ada. Base policy."  # production still at 1: a new version moves none
    assert await _text(svc, A, pid, "2") == "V2 Ada."  # a request's version pins the base version
    await svc.move_label(prompt_id=pid, label="production", body={"version": "2"}, actor="op", request_id=None)
    assert await _text(svc, A, pid) == "V2 Ada."  # the cache was dropped when the label moved

    await svc.put_override(tenant_id=A, prompt_id=pid, body={"blocks": {"policy": " A policy for {{name}}."}},
                           actor="a", request_id=None)
    assert await _text(svc, A, pid) == "V2 Ada. A policy for Ada."  # the override applies on top of the label
    assert await _text(svc, A, pid, "1") == "Hello Ada. A policy for Ada."  # and on top of a pinned version
    assert await _text(svc, B, pid) == "V2 Ada."  # B has no override
    use = (await svc.render(tenant_id=A, prompt={"id": pid, "version": "1", "variables": {"name": "x"}})).use
    assert (use.version, use.override_version) == ("1", "1")

    await svc.put_override(tenant_id=A, prompt_id=pid, body={"template": "Whole {{name}}."}, actor="a",
                           request_id=None)
    assert await _text(svc, A, pid) == "V2 Ada. A policy for Ada."  # override version 2 is not labelled yet
    await svc.move_override_label(tenant_id=A, prompt_id=pid, label="production", body={"version": "2"}, actor="a",
                                  request_id=None)
    assert await _text(svc, A, pid) == "Whole Ada."
    await svc.delete_override(tenant_id=A, prompt_id=pid, actor="a", request_id=None)
    assert await _text(svc, A, pid) == "V2 Ada."
    await svc.delete(prompt_id=pid, actor="op", request_id=None)
    with pytest.raises(NotFound) as err:
        await _text(svc, A, pid)
    assert err.value.param == "prompt.id"
    actions = [a for a, _t, _d in audit.entries]
    assert actions == ["prompt.created", "prompt.version_created", "prompt.label_moved",
                       "prompt.override_version_created", "prompt.override_version_created",
                       "prompt.override_label_moved", "prompt.override_deleted", "prompt.deleted"]
    assert [t for _a, t, _d in audit.entries if "override" in _a] == [A, A, A, A]


async def test_overrides_are_sealed_scoped_rewrapped_and_erased(rig: tuple[PromptsService, Keyring, Audit],
                                                                 database: Database) -> None:
    svc, keyring, _ = rig
    pid = (await svc.create(body={"name": "p", "template": BASE, "variables": VARS}, actor="op", request_id=None))["id"]
    secret = "CANARY-override-text"
    made = await svc.put_override(tenant_id=A, prompt_id=pid, body={"blocks": {"policy": secret}}, actor="a",
                                  request_id=None)
    assert made["blocks"] == {"policy": secret} and made["labels"] == {"production": "1"}
    async with database.platform_tx() as conn:
        blobs = [bytes(r[0]) for r in await conn.execute(sa.text("SELECT sealed FROM prompt_overrides"))]
    assert len(blobs) == 1 and secret.encode() not in blobs[0]

    with pytest.raises(NotFound):  # B asks for the same prompt's override: exactly as if there were none
        await svc.get_override(tenant_id=B, prompt_id=pid)
    assert await svc.list_overrides(tenant_id=B) == []
    assert secret not in await _text(svc, B, pid)

    [exported] = await svc.export(tenant_id=A)
    assert exported["blocks"] == {"policy": secret} and exported["version"] == "1"
    assert await svc.export(tenant_id=B) == []

    await keyring.rotate_dek(tenant_id=A)
    assert await svc.rewrap(tenant_id=A) == 1
    assert (await svc.get_override(tenant_id=A, prompt_id=pid))["blocks"] == {"policy": secret}

    await svc.forget_tenant(tenant_id=A)
    with pytest.raises(NotFound):
        await svc.get_override(tenant_id=A, prompt_id=pid)
    assert secret not in await _text(svc, A, pid)

    await svc.put_override(tenant_id=B, prompt_id=pid, body={"template": "B {{name}}"}, actor="b", request_id=None)
    await svc.delete(prompt_id=pid, actor="op", request_id=None)  # takes every tenant's override with it
    assert await svc.list_overrides(tenant_id=B) == []
    async with database.platform_tx() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM prompt_overrides"))).scalar_one() == 0


async def test_an_override_must_fit_the_base(rig: tuple[PromptsService, Keyring, Audit]) -> None:
    svc, _, _ = rig
    pid = (await svc.create(body={"name": "p", "template": BASE, "variables": VARS}, actor="op", request_id=None))["id"]
    for body, param in (({"blocks": {"other": "x"}}, "blocks.other"), ({"template": "{{ unknown }}"}, "template"),
                        ({"blocks": {"policy": "{% block x %}{% endblock %}"}}, "blocks.policy")):
        with pytest.raises(InvalidRequest) as err:
            await svc.put_override(tenant_id=A, prompt_id=pid, body=body, actor="a", request_id=None)
        assert err.value.param == param
    with pytest.raises(NotFound):
        await svc.put_override(tenant_id=A, prompt_id="pmpt_missing", body={"blocks": {"policy": "x"}}, actor="a",
                               request_id=None)
