"""Prompt templates against a live server on SQLite and on Postgres: the admin API's contract (versions, labels that
only move when put, tenant overrides by the tenant's admin key, audit), and their use through the official SDK in
Responses (``prompt``) and chat completions (``extra_body``): what the model was sent (read back from the tenant's
request log), the echoed ``prompt``, usage grouped by prompt, 400s naming the variable, and isolation (another
tenant's override is never read, used or told apart from a missing one)."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from live import Live, Process, Tenant, catalog_config, cli, start_server
from services import PostgresServer

BASE = ("You are the assistant of {{company}} for {{customer}}.{% block policy %} Refunds take 30 days.{% endblock %}"
        " Answer in {{language}}.")
VARIABLES = {"company": {"type": "string", "required": True}, "customer": {"type": "string", "required": True},
             "language": {"type": "string", "default": "English"}, "vip": {"type": "boolean", "default": False}}


@dataclass
class Deployment:
    live: Live
    a: Tenant
    b: Tenant


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def dep(request: pytest.FixtureRequest, upstream: Process, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp(f"prompts-{request.param}")
    kw = {}
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pg = server.create_database()
        kw = {"database_url": pg.app_url, "migrate_url": pg.owner_url}
    proc = start_server(tmp, catalog_config(upstream.url, local=False), warmup=False, **kw)
    try:
        live = Live(proc.url, proc, request.param)
        tenants = []
        for name in ("a", "b"):
            t = live.new_tenant(f"prompts-{name}-{uuid.uuid4().hex[:8]}")
            with live.admin(t.admin_key) as c:
                assert c.patch(f"/admin/v1/tenants/{t.id}", json={"settings": {"request_log_days": 1}}).is_success
            tenants.append(t)
        yield Deployment(live, *tenants)
    finally:
        proc.stop()


def _prompt(live: Live, **body: Any) -> dict[str, Any]:
    with live.admin() as c:
        r = c.post("/admin/v1/prompts", json={"name": "support", "template": BASE, "variables": VARIABLES, **body})
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out


class Log:
    """What the model was sent for one tenant, from its request log (written every 2 s): ``new(n)`` waits for ``n``
    entries that were not there at the last call and gives their requests, oldest first."""

    def __init__(self, live: Live, tenant: Tenant) -> None:
        self.live, self.tenant = live, tenant
        self.seen = {e["id"] for e in self._listed()}

    def _listed(self) -> list[dict[str, Any]]:
        with self.live.admin(self.tenant.admin_key) as c:
            data: list[dict[str, Any]] = c.get(f"/admin/v1/tenants/{self.tenant.id}/requests",
                                               params={"limit": 1000}).json()["data"]
            return data

    def new(self, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 15
        while True:
            fresh = [e for e in self._listed() if e["id"] not in self.seen]
            if len(fresh) >= count:
                break
            assert time.monotonic() < deadline, fresh
            time.sleep(0.3)
        self.seen |= {e["id"] for e in fresh}
        fresh.sort(key=lambda e: e["created_at"])
        with self.live.admin(self.tenant.admin_key) as c:
            return [c.get(f"/admin/v1/tenants/{self.tenant.id}/requests/{e['id']}").json()["request"] for e in fresh]


def _system(request: dict[str, Any]) -> str:
    text: str = request["messages"][0]["content"]
    assert request["messages"][0]["role"] == "system"
    return text


# --- the admin API ------------------------------------------------------------------------------------------------
def test_versions_and_labels_follow_the_contract(dep: Deployment) -> None:
    made = _prompt(dep.live, model={"temperature": 0.2})
    pid = made["id"]
    assert pid.startswith("pmpt_") and made["version"] == "1" and made["labels"] == {"production": "1"}
    assert made["variables"]["language"] == {"type": "string", "required": False, "default": "English",
                                             "description": None}
    with dep.live.admin() as c:
        v2 = c.post(f"/admin/v1/prompts/{pid}/versions", json={"template": "v2 {{company}}", "variables": VARIABLES})
        assert v2.status_code == 201 and v2.json()["version"] == "2", v2.text
        assert v2.json()["labels"] == {"production": "1"}  # a new version moves no label
        assert c.get(f"/admin/v1/prompts/{pid}").json()["template"] == BASE  # production still points at 1
        moved = c.put(f"/admin/v1/prompts/{pid}/labels/production", json={"version": "2"})
        assert moved.status_code == 200 and moved.json()["labels"] == {"production": "2"}
        assert c.put(f"/admin/v1/prompts/{pid}/labels/staging", json={"version": "1"}).json()["labels"] == {
            "production": "2", "staging": "1"}
        assert c.get(f"/admin/v1/prompts/{pid}", params={"version": "1"}).json()["template"] == BASE
        assert c.put(f"/admin/v1/prompts/{pid}/labels/production", json={"version": "9"}).status_code == 404
        assert pid in [p["id"] for p in c.get("/admin/v1/prompts", params={"limit": 1000}).json()["data"]]
        audit = c.get("/admin/v1/audit", params={"action": "prompt.label_moved", "limit": 1000}).json()["data"]
        moves = [e["details"] for e in audit if e["details"]["prompt_id"] == pid]
        assert {"label": "production", "version": "2", "previous": "1"}.items() <= moves[0].items()
        assert c.delete(f"/admin/v1/prompts/{pid}").json()["deleted"] is True
        assert c.get(f"/admin/v1/prompts/{pid}").status_code == 404


@pytest.mark.parametrize(("body", "param"), [
    ({"template": "{{ 7*7 }}"}, "template"),
    ({"template": "{{ nobody }}"}, "template"),
    ({"template": "{% for x in y %}{% endfor %}"}, "template"),
    ({"template": "x", "variables": {"a": {"type": "integer"}}}, "variables.a.type"),
    ({"template": [{"role": "robot", "content": "x"}]}, "template[0].role"),
    ({"template": "x", "model": {"seed": 1}}, "model.seed"),
    ({"template": "x", "colour": "red"}, "colour"),
    ({}, "template"),
])  # fmt: skip
def test_bad_prompts_are_400s_naming_the_field(dep: Deployment, body: dict[str, Any], param: str) -> None:
    with dep.live.admin() as c:
        r = c.post("/admin/v1/prompts", json={"name": "bad", **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_who_may_manage_prompts_and_overrides(dep: Deployment) -> None:
    pid = _prompt(dep.live)["id"]
    a, b = dep.a, dep.b
    path = f"/admin/v1/tenants/{a.id}/prompts/{pid}"
    with dep.live.admin(a.admin_key) as c:
        assert c.post("/admin/v1/prompts", json={"name": "x", "template": "x"}).status_code == 403
        assert c.get(f"/admin/v1/prompts/{pid}").json()["template"] == BASE  # a tenant reads the base it overrides
        assert c.put(path, json={"blocks": {"nope": "x"}}).json()["error"]["param"] == "blocks.nope"
        assert c.put(path, json={"blocks": {"policy": "{{ secret }}"}}).json()["error"]["param"] == "blocks.policy"
        assert c.put(path, json={"blocks": {"policy": "x"}, "template": "y"}).status_code == 400
    with dep.live.admin(a.member_key) as c:
        assert c.put(path, json={"blocks": {"policy": " x"}}).status_code == 403
    with dep.live.admin(b.admin_key) as c:  # another tenant's path: exactly a missing tenant's answer
        foreign, missing = c.put(path, json={"blocks": {"policy": " x"}}), c.put(
            f"/admin/v1/tenants/ten_{uuid.uuid4().hex[:12]}/prompts/{pid}", json={"blocks": {"policy": " x"}})
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json()["error"]["code"] == missing.json()["error"]["code"]
        assert c.get(path).status_code == 404
    with dep.live.admin() as c:  # the platform admin may override for a tenant
        made = c.put(path, json={"template": "Platform-set for {{customer}}."})
        assert made.status_code == 200 and made.json()["version"] == "1", made.text
        assert c.delete(path).json()["deleted"] is True
        assert c.get(path).status_code == 404


# --- use: Responses and chat completions --------------------------------------------------------------------------
def test_a_tenant_override_applies_on_top_and_is_echoed_metered_and_isolated(dep: Deployment) -> None:
    live, a, b = dep.live, dep.a, dep.b
    pid = _prompt(live)["id"]
    marker = f"A-ONLY-{uuid.uuid4().hex[:8]}"
    path = f"/admin/v1/tenants/{a.id}/prompts/{pid}"
    with live.admin(a.admin_key) as c:
        first = c.put(path, json={"blocks": {"policy": f" {marker}: refunds take 14 days."}})
        assert first.status_code == 200 and first.json()["labels"] == {"production": "1"}, first.text
        second = c.put(path, json={"blocks": {"policy": " Second draft."}})
        assert second.json()["version"] == "2" and second.json()["labels"] == {"production": "1"}
        assert c.get(path).json()["blocks"] == {"policy": f" {marker}: refunds take 14 days."}
        assert c.get(path, params={"version": "2"}).json()["blocks"] == {"policy": " Second draft."}
    variables = {"company": "Acme", "customer": "{{ 7*7 }}"}
    log_a, log_b = Log(live, a), Log(live, b)
    sdk_a, sdk_b = live.sdk(a.member_key, max_retries=0), live.sdk(b.member_key, max_retries=0)
    got = sdk_a.responses.create(model="fake-chat", input="Hello", prompt={"id": pid, "variables": variables})
    assert got.prompt is not None and (got.prompt.id, got.prompt.version) == (pid, "1")
    assert got.prompt.variables == variables
    chat = sdk_b.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "Hi"}],
                                         extra_body={"prompt": {"id": pid, "version": "1", "variables": variables}})
    assert chat.model_extra is not None and chat.model_extra["prompt"]["version"] == "1"

    sent_a = _system(log_a.new(1)[0])
    assert sent_a == (f"You are the assistant of Acme for {{{{ 7*7 }}}}. {marker}: refunds take 14 days. "
                      "Answer in English.")  # the value stayed literal text
    sent_b = _system(log_b.new(1)[0])
    assert sent_b == "You are the assistant of Acme for {{ 7*7 }}. Refunds take 30 days. Answer in English."
    assert marker not in sent_b

    with live.admin(a.admin_key) as c:  # moving the override's label changes what the next request gets
        assert c.put(f"{path}/labels/production", json={"version": "2"}).json()["labels"] == {"production": "2"}
    sdk_a.responses.create(model="fake-chat", input="Again", prompt={"id": pid, "variables": variables})
    assert "Second draft." in _system(log_a.new(1)[0])

    rows = _usage(live, a, pid, requests=2)
    assert {(r["prompt_version"], r["prompt_override_version"]) for r in rows} == {("1", "1"), ("1", "2")}
    b_rows = _usage(live, b, pid, requests=1)
    assert [(r["prompt_version"], r["prompt_override_version"]) for r in b_rows] == [("1", None)]


def _usage(live: Live, tenant: Tenant, pid: str, *, requests: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    with live.admin() as c:
        while True:
            r = c.get(f"/admin/v1/tenants/{tenant.id}/usage",
                      params={"group_by": "prompt,prompt_version,prompt_override_version"})
            rows = [row for row in r.json()["data"] if row["prompt"] == pid]
            if sum(row["requests"] for row in rows) >= requests:
                return rows
            assert time.monotonic() < deadline, r.text
            time.sleep(0.3)


def test_prompt_model_settings_and_message_templates_in_chat_and_streams(dep: Deployment) -> None:
    live, a = dep.live, dep.a
    with live.admin() as c:
        r = c.post("/admin/v1/prompts", json={
            "name": "messages", "variables": {"topic": {"type": "string", "required": True}},
            "template": [{"role": "developer", "content": "Talk about {{topic}}."}], "model": {"model": "fake-chat"}})
        pid = r.json()["id"]
    sdk, log = live.sdk(a.member_key, max_retries=0), Log(live, a)
    made = sdk.responses.create(input="Go", prompt={"id": pid, "variables": {"topic": "tides"}})
    assert made.model == "fake-chat" and made.prompt is not None and made.prompt.version == "1"
    sent = log.new(1)[0]
    assert sent["messages"][0] == {"role": "developer", "content": "Talk about tides."}
    events = list(sdk.responses.create(model="fake-chat", input="Go", stream=True,
                                       prompt={"id": pid, "variables": {"topic": "waves"}}))
    assert events[-1].response.prompt.variables == {"topic": "waves"}
    parts = list(sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "x"}],
                                             stream=True, extra_body={"prompt": {"id": pid,
                                                                                 "variables": {"topic": "rain"}}}))
    assert parts
    streamed = log.new(2)
    assert streamed[0]["messages"][0] == {"role": "developer", "content": "Talk about waves."}
    assert streamed[1]["messages"][0] == {"role": "developer", "content": "Talk about rain."}


@pytest.mark.parametrize(("prompt", "status", "param"), [
    ({"variables": {"company": "x"}}, 400, "prompt.variables.customer"),
    ({"variables": {"company": "x", "customer": "y", "colour": "red"}}, 400, "prompt.variables.colour"),
    ({"variables": {"company": "x", "customer": "y", "vip": "yes"}}, 400, "prompt.variables.vip"),
    ({"version": "99", "variables": {"company": "x", "customer": "y"}}, 404, "prompt.version"),
    ({"id": "pmpt_" + "0" * 48}, 404, "prompt.id"),
    ({"labels": "x"}, 400, "prompt.labels"),
])  # fmt: skip
def test_bad_prompt_references_name_the_parameter(dep: Deployment, prompt: dict[str, Any], status: int,
                                                  param: str) -> None:
    pid = _prompt(dep.live)["id"]
    sdk = dep.live.sdk(dep.a.member_key, max_retries=0)
    ref: Any = {"id": pid, **prompt}
    for call in (lambda: sdk.responses.create(model="fake-chat", input="x", prompt=ref),
                 lambda: sdk.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "x"}],
                                                     extra_body={"prompt": ref})):
        with pytest.raises(openai.APIStatusError) as err:
            call()
        assert err.value.status_code == status and err.value.body["param"] == param  # type: ignore[index]


def test_another_tenants_override_is_never_used_or_read(dep: Deployment) -> None:
    live, a, b = dep.live, dep.a, dep.b
    pid = _prompt(live)["id"]
    marker = f"SECRET-{uuid.uuid4().hex}"
    with live.admin(a.admin_key) as c:
        assert c.put(f"/admin/v1/tenants/{a.id}/prompts/{pid}", json={"template": f"{marker} {{{{customer}}}}"}
                     ).status_code == 200
    with live.admin(b.admin_key) as c:
        own = c.get(f"/admin/v1/tenants/{b.id}/prompts/{pid}")
        foreign = c.get(f"/admin/v1/tenants/{a.id}/prompts/{pid}")
        assert own.status_code == foreign.status_code == 404
        assert marker not in own.text + foreign.text
        assert c.get(f"/admin/v1/tenants/{b.id}/prompts").json()["data"] == []
        assert c.get(f"/admin/v1/tenants/{a.id}/prompts").status_code == 404
    missing_tenant = "ten_" + "0" * 16
    override = f"/admin/v1/tenants/{a.id}/prompts/{pid}"
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", override, None), ("PUT", override, {"template": "pwned {{customer}}"}), ("DELETE", override, None),
        ("PUT", f"{override}/labels/production", {"version": "1"}), ("GET", f"/admin/v1/tenants/{a.id}/prompts", None)]
    for key in (b.admin_key, b.member_key, b.viewer_key):  # every route of A's override, with each of B's keys
        with live.admin(key) as c:
            for method, path, body in attempts:
                r, missing = c.request(method, path, json=body), c.request(
                    method, path.replace(a.id, missing_tenant), json=body)
                assert r.status_code == missing.status_code == 404, (method, path, r.text)
                assert r.json()["error"]["code"] == missing.json()["error"]["code"] and marker not in r.text
    with live.admin(a.admin_key) as c:  # unchanged
        assert c.get(f"/admin/v1/tenants/{a.id}/prompts/{pid}").json()["template"] == f"{marker} {{{{customer}}}}"
    with live.admin(a.admin_key) as c:  # A's export holds its override, decrypted; B's does not
        export_a = zipfile.ZipFile(io.BytesIO(c.post(f"/admin/v1/tenants/{a.id}/export").content))
        overrides = json.loads(export_a.read("prompt_overrides.json"))
        assert [o["template"] for o in overrides if o["prompt_id"] == pid] == [f"{marker} {{{{customer}}}}"]
    with live.admin(b.admin_key) as c:
        export_b = zipfile.ZipFile(io.BytesIO(c.post(f"/admin/v1/tenants/{b.id}/export").content))
        assert json.loads(export_b.read("prompt_overrides.json")) == []
    made = live.sdk(b.member_key).responses.create(model="fake-chat", input="x",
                                                   prompt={"id": pid, "variables": {"company": "c", "customer": "d"}})
    assert made.instructions is not None and marker not in made.instructions
    assert made.instructions.startswith("You are the assistant of c for d.")


def test_the_cli_manages_prompts_and_overrides(sqlite_server: Live, tmp_path: Any) -> None:
    """The CLI is HTTP through the same API: once, on the shared SQLite server."""
    live = sqlite_server
    a = live.new_tenant(f"prompts-cli-{uuid.uuid4().hex[:8]}")
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps([{"role": "system", "content": "Hi {{who}}.{% block tail %}{% endblock %}"}]))
    made = cli(live, "prompts", "create", "cli-made", "--template-file", str(messages), "--variables",
               '{"who": {"type": "string", "default": "you"}}', "--json")
    assert made.returncode == 0, made.stderr
    pid = json.loads(made.stdout)["id"]
    added = cli(live, "prompts", "add-version", pid, "--template", "Plain {{who}}.", "--variables",
                '{"who": {"type": "string"}}', "--json")
    assert json.loads(added.stdout)["labels"] == {"production": "1"}
    assert json.loads(cli(live, "prompts", "label", pid, "production", "2", "--json").stdout)["version"] == "2"
    assert pid in cli(live, "prompts", "list").stdout
    assert json.loads(cli(live, "prompts", "get", pid, "--version", "1", "--json").stdout)["template"][0]["role"] \
        == "system"
    over = cli(live, "prompts", "override", a.id, pid, "--template", "Tenant {{who}}.", "--json", key=a.admin_key)
    assert over.returncode == 0 and json.loads(over.stdout)["version"] == "1", over.stderr
    cli(live, "prompts", "override", a.id, pid, "--template", "Tenant v2 {{who}}.", key=a.admin_key)
    moved = cli(live, "prompts", "override-label", a.id, pid, "production", "2", "--json", key=a.admin_key)
    assert json.loads(moved.stdout)["template"] == "Tenant v2 {{who}}."
    assert pid in cli(live, "prompts", "override-list", a.id, key=a.admin_key).stdout
    assert json.loads(cli(live, "prompts", "override-get", a.id, pid, "--version", "1", "--json",
                          key=a.admin_key).stdout)["template"] == "Tenant {{who}}."
    refused = cli(live, "prompts", "override", a.id, pid, "--block", "nope=x", key=a.admin_key)
    assert refused.returncode == 2 and "nope" in refused.stderr
    assert cli(live, "prompts", "override-delete", a.id, pid, key=a.admin_key).returncode != 0  # no --yes, no tty
    assert cli(live, "prompts", "override-delete", a.id, pid, "--yes", key=a.admin_key).returncode == 0
    assert cli(live, "prompts", "delete", pid, "--yes").returncode == 0
    assert cli(live, "prompts", "get", pid).returncode == 2
