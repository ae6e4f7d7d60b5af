"""Per-tenant LoRA adapters on the embedded default model (SmolLM2 on llama.cpp) through a live ``tenantlm serve``
and the official SDK: adapter files written by the ``gguf`` package (``tests/lora_files.py``) are checked at
creation, two tenants' adapters of the same name each answer as their own file does, another tenant cannot name
them, an adapter changes no other request, and usage names the adapter."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from live import Live, Tenant
from lora_files import bad_files, write_lora

pytestmark = pytest.mark.local_models

BASE = "smollm2-135m-instruct"
MSG: list[Any] = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
                  {"role": "user", "content": "What is the capital of France?"}]


def create(c: httpx.Client, tenant: Tenant, name: str, source: Path) -> httpx.Response:
    return c.post(f"/admin/v1/tenants/{tenant.id}/adapters",
                  json={"name": name, "base_model": BASE, "source": str(source)})


def ask(live: Live, tenant: Tenant, model: str) -> str:
    reply = live.sdk(tenant.member_key, max_retries=0).chat.completions.create(
        model=model, messages=MSG, temperature=0, max_tokens=16)
    assert reply.model == model
    return reply.choices[0].message.content or ""


def requests_by_model(live: Live, tenant: Tenant, model: str, expected: int) -> dict[str, int]:
    """The tenant's usage by model, once ``model`` shows ``expected`` requests (the ledger settles after the reply)."""
    deadline = time.monotonic() + 15
    while True:
        with live.admin() as c:
            rows = c.get(f"/admin/v1/tenants/{tenant.id}/usage", params={"group_by": "model"}).json()["data"]
        by_model = {r["model"]: r["requests"] for r in rows}
        if by_model.get(model) == expected or time.monotonic() > deadline:
            return by_model
        time.sleep(0.3)


def test_each_tenant_gets_its_own_adapter_and_nobody_else_sees_it(sqlite_server: Live, tmp_path: Path) -> None:
    live = sqlite_server
    one, two, three, stranger = (live.new_tenant(f"lora-{n}") for n in ("one", "two", "three", "stranger"))
    file_a, file_b = write_lora(tmp_path / "a.gguf", seed=11), write_lora(tmp_path / "b.gguf", seed=12)
    with live.admin() as c:
        for tenant, source, name in ((one, file_a, "support-v1"), (two, file_b, "support-v1"),
                                     (three, file_a, "same-file-as-one")):
            r = create(c, tenant, name, source)
            assert r.status_code == 201, r.text
            assert (r.json()["base_model"], r.json()["source"]) == (BASE, str(source))
    base = ask(live, stranger, BASE)
    mine, theirs = ask(live, one, "support-v1"), ask(live, two, "support-v1")
    assert mine != base and theirs != base and mine != theirs
    assert ask(live, three, "same-file-as-one") == mine  # an adapter answers as its file does, whoever owns it
    assert ask(live, stranger, BASE) == base  # no adapter stayed on the model
    assert ask(live, one, BASE) == base
    with pytest.raises(openai.NotFoundError) as foreign:
        live.sdk(stranger.member_key, max_retries=0).chat.completions.create(model="support-v1", messages=MSG)
    assert isinstance(foreign.value.body, dict) and foreign.value.body["code"] == "model_not_found"
    assert requests_by_model(live, one, "support-v1", 1).get("support-v1") == 1


def test_streaming_and_not_through_the_sdk(sqlite_server: Live, tmp_path: Path) -> None:
    live = sqlite_server
    tenant = live.new_tenant("lora-stream")
    with live.admin() as c:
        assert create(c, tenant, "tuned", write_lora(tmp_path / "tuned.gguf", seed=13)).status_code == 201
    whole = ask(live, tenant, "tuned")
    sdk = live.sdk(tenant.member_key, max_retries=0)
    chunks = list(sdk.chat.completions.create(model="tuned", messages=MSG, temperature=0, max_tokens=16,
                                              stream=True, stream_options={"include_usage": True}))
    assert {c.model for c in chunks} == {"tuned"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert whole != ask(live, tenant, BASE)
    assert requests_by_model(live, tenant, "tuned", 2).get("tuned") == 2


def test_deleted_adapter_is_gone(sqlite_server: Live, tmp_path: Path) -> None:
    live = sqlite_server
    tenant = live.new_tenant("lora-delete")
    with live.admin() as c:
        assert create(c, tenant, "short-lived", write_lora(tmp_path / "s.gguf", seed=14)).status_code == 201
    assert ask(live, tenant, "short-lived")
    with live.admin() as c:
        assert c.delete(f"/admin/v1/tenants/{tenant.id}/adapters/short-lived").status_code == 200
    with pytest.raises(openai.NotFoundError):
        live.sdk(tenant.member_key, max_retries=0).chat.completions.create(model="short-lived", messages=MSG)


def test_files_that_are_not_an_adapter_for_the_model_are_refused(sqlite_server: Live, tmp_path: Path) -> None:
    live = sqlite_server
    tenant = live.new_tenant("lora-bad")
    with live.admin() as c:
        for problem, path in bad_files(tmp_path).items():
            r = create(c, tenant, "bad", path)
            assert r.status_code == 400, (problem, r.text)
            error = r.json()["error"]
            assert (error["param"], error["type"]) == ("source", "invalid_request_error"), (problem, error)
        assert c.get(f"/admin/v1/tenants/{tenant.id}/adapters").json()["data"] == []
