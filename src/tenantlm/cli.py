"""The ``tenantlm`` command: run the server, and manage tenants and keys through the admin API.

Management commands talk HTTP to a running server (``--url`` / ``TENANTLM_URL``, default http://127.0.0.1:8080) with a
platform admin key or a tenant admin key (``--admin-key`` / ``TENANTLM_ADMIN_KEY``), so the CLI obeys exactly the rules
the API enforces. ``tenantlm files`` and ``tenantlm vector-stores`` use a tenant API key instead (``--api-key`` /
``TENANTLM_API_KEY``) on the tenant-facing API (``cli_knowledge``). Command groups live beside this module:
``cli_catalog`` (private models, adapters), ``cli_prompts`` (prompt templates), ``cli_support`` (shared plumbing).
Every read command takes ``--json``.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer

from tenantlm import __version__
from tenantlm.cli_catalog import adapters_app, models_app
from tenantlm.cli_knowledge import files_app, stores_app
from tenantlm.cli_prompts import prompts_app
from tenantlm.cli_support import (
    DEFAULT_URL,
    URL_HELP,
    JsonOpt,
    KeyOpt,
    UrlOpt,
    _call,
    _download,
    _fail,
    _json_arg,
    _show,
)

if TYPE_CHECKING:
    from tenantlm.settings import Settings

app = typer.Typer(help=f"TenantLM: a self-hosted, multi-tenant AI platform server.\n\n{URL_HELP}",
                  no_args_is_help=True, add_completion=False)
tenants_app = typer.Typer(help="Create, inspect, change and delete tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Issue, list and revoke a tenant's API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="Read, export and verify the tamper-evident audit trail.", no_args_is_help=True)
encryption_app = typer.Typer(help="Inspect and rotate a tenant's encryption keys.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
limits_app = typer.Typer(help="Read and set a tenant's limits, and the plans they start from.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(limits_app, name="limits")
app.add_typer(encryption_app, name="encryption")
platform_keys_app = typer.Typer(help="Issue, list and revoke platform keys (roles: admin, auditor, billing).",
                                no_args_is_help=True)
app.add_typer(platform_keys_app, name="platform-keys")
app.add_typer(files_app, name="files")
app.add_typer(stores_app, name="vector-stores")
app.add_typer(models_app, name="models")
app.add_typer(adapters_app, name="adapters")
app.add_typer(prompts_app, name="prompts")

@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.  [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.  [default: 8080]")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where the SQLite database and local files "
                                                  "live.  [default: ./data]")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file declaring models and providers.")] = None,
) -> None:
    """Run the server (offline on the embedded default: SQLite, local models).

    Before it creates or migrates anything it checks the configuration, the data dir, the database URL, the port and
    the services it needs; a problem is reported on one line and the exit status is 1."""
    from tenantlm import preflight

    try:
        settings = preflight.settings(config, host=host, port=port, data_dir=data_dir)
        sockets = preflight.run(settings)
    except preflight.StartupError as exc:
        _fail(str(exc))
    _serve(settings, sockets)


def _serve(settings: Settings, sockets: list[socket.socket]) -> None:
    import uvicorn

    from tenantlm import preflight
    from tenantlm.app import create_app
    from tenantlm.audit.signer import SigningKeyError
    from tenantlm.crypto.errors import MasterKeyError
    from tenantlm.observability.logging import configure_logging

    configure_logging(level=settings.log_level, json=settings.log_json)
    try:
        app = create_app(settings)
    except (MasterKeyError, SigningKeyError, OSError) as exc:
        preflight.close(sockets)
        _fail(" ".join(str(exc).split()))
    # No "server: uvicorn" header: it tells a caller which software (and so which known flaws) to try, and costs a
    # header line on every response.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                            loop="auto", http="auto", timeout_graceful_shutdown=10, server_header=False)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        preflight.close(sockets)
    if not server.started:
        _fail("the server stopped during start-up; its log above says why")


@app.command("fake-upstream")
def fake_upstream(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9090,
    tokens: Annotated[int, typer.Option(help="Completion tokens per reply.")] = 16,
    latency_ms: Annotated[float, typer.Option(help="Delay before the first token.")] = 0.0,
    token_latency_ms: Annotated[float, typer.Option(help="Delay between streamed tokens.")] = 0.0,
) -> None:
    """Serve the deterministic fake model as an OpenAI-compatible upstream (for tests and benchmarks)."""
    from tenantlm.providers.fake_server import serve as serve_fake
    from tenantlm.settings import ProviderConfig

    cfg = ProviderConfig(name="fake", type="fake", tokens=tokens, latency_ms=latency_ms,
                         token_latency_ms=token_latency_ms)
    serve_fake(host, port, cfg)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@tenants_app.command("create")
def tenants_create(
    name: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    plan: Annotated[str | None, typer.Option(help="Plan name.")] = None,
    region: Annotated[str | None, typer.Option(help="Region label.")] = None,
    metadata: Annotated[str | None, typer.Option(help="Metadata as a JSON object.")] = None,
) -> None:
    """Create a tenant."""
    body: dict[str, Any] = {"name": name}
    for k, v in (("plan", plan), ("region", region), ("metadata", _json_arg(metadata, "--metadata"))):
        if v is not None:
            body[k] = v
    _show(_call("POST", url, admin_key, "/admin/v1/tenants", body), as_json, ["id", "name", "status", "plan"])


@tenants_app.command("list")
def tenants_list(url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """List tenants."""
    _show(_call("GET", url, admin_key, "/admin/v1/tenants"), as_json, ["id", "name", "status", "plan", "region"])


@tenants_app.command("get")
def tenants_get(tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False
                ) -> None:
    """Show one tenant."""
    _show(_call("GET", url, admin_key, f"/admin/v1/tenants/{tenant_id}"), as_json)


@tenants_app.command("update")
def tenants_update(
    tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    plan: Annotated[str | None, typer.Option(help="New plan.")] = None,
    status: Annotated[str | None, typer.Option(help="active or suspended.")] = None,
    allowed_models: Annotated[str | None, typer.Option(help="JSON list of model names, or null for all.")] = None,
    model_aliases: Annotated[str | None, typer.Option(help="JSON object alias -> model.")] = None,
    settings: Annotated[str | None, typer.Option(help="JSON object of tenant settings.")] = None,
) -> None:
    """Change a tenant."""
    body: dict[str, Any] = {k: v for k, v in (("name", name), ("plan", plan), ("status", status)) if v is not None}
    for k, raw in (("allowed_models", allowed_models), ("model_aliases", model_aliases), ("settings", settings)):
        if raw is not None:
            body[k] = _json_arg(raw, f"--{k.replace('_', '-')}")
    if not body:
        _fail("nothing to change: give at least one option")
    _show(_call("PATCH", url, admin_key, f"/admin/v1/tenants/{tenant_id}", body), as_json)


@tenants_app.command("suspend")
def tenants_suspend(tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False
                    ) -> None:
    """Suspend a tenant: every request with its keys gets 403 until resumed."""
    _show(_call("PATCH", url, admin_key, f"/admin/v1/tenants/{tenant_id}", {"status": "suspended"}), as_json,
          ["id", "name", "status"])


@tenants_app.command("resume")
def tenants_resume(tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False
                   ) -> None:
    """Make a suspended tenant active again."""
    _show(_call("PATCH", url, admin_key, f"/admin/v1/tenants/{tenant_id}", {"status": "active"}), as_json,
          ["id", "name", "status"])


@tenants_app.command("promote")
def tenants_promote(
    tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    tier: Annotated[str | None, typer.Option(
        help="silo (the tenant's own database) or pool (the shared tables). Default: silo, or the tenant's tier "
             "as it is when --storage-region is given.")] = None,
    storage_region: Annotated[str | None, typer.Option(
        help="Move the content to the storage location of this region (storage_locations).")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Start the move and return.")] = False,
    reserved_share: Annotated[float | None, typer.Option(
        help="silo only: the share of every model's capacity kept for the tenant (0 < share <= 0.9).")] = None,
) -> None:
    """Move a tenant's content to another isolation tier and/or storage region, online, and wait for it (with a
    progress bar)."""
    if tier is None and storage_region is None:
        tier = "silo"
    body: dict[str, Any] = {"tier": tier, "reserved_share": reserved_share}
    if storage_region is not None:
        body["storage_region"] = storage_region
    tenant = _call("POST", url, admin_key, f"/admin/v1/tenants/{tenant_id}/tier", body)
    if not no_wait:
        tenant = _wait_move(url, admin_key, tenant_id, tenant, quiet=as_json)
    move = tenant.get("tier_move") or {}
    if move.get("phase") == "failed":
        _fail(f"the move to {move.get('to')} in {move.get('to_storage_region')} failed: {move.get('error')}")
    _show(tenant, as_json, ["id", "name", "tier", "storage_region"])


def _wait_move(url: str, key: str | None, tenant_id: str, tenant: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    import time

    from rich.progress import Progress

    with Progress(disable=quiet, transient=True) as bar:
        task = bar.add_task("moving", total=1.0)
        while (tenant.get("tier_move") or {}).get("phase") not in (None, "done", "failed"):
            move = tenant["tier_move"]
            bar.update(task, completed=move["progress"], description=f"{move['phase']} ({move['to']})")
            time.sleep(0.2)
            tenant = _call("GET", url, key, f"/admin/v1/tenants/{tenant_id}")
        bar.update(task, completed=1.0)
    return tenant


@tenants_app.command("delete")
def tenants_delete(
    tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a tenant: destroy its encryption keys (crypto-shredding), then its rows and files. Irreversible."""
    if not yes:
        if not sys.stdin.isatty():
            _fail("refusing to delete without --yes when not on a terminal")
        typer.confirm(f"Delete tenant {tenant_id}, destroy its keys and all its data? This cannot be undone",
                      abort=True)
    _show(_call("DELETE", url, admin_key, f"/admin/v1/tenants/{tenant_id}?confirm={quote(tenant_id)}"), as_json)


@tenants_app.command("export")
def tenants_export(
    tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Zip file to write "
                                                "(default <tenant_id>-export.zip).")] = None,
) -> None:
    """Download everything the server holds for a tenant, decrypted, as a zip with a manifest (GDPR export)."""
    out = output or Path(f"{tenant_id}-export.zip")
    size = _download(url, admin_key, "POST", f"/admin/v1/tenants/{tenant_id}/export", out)
    typer.echo(f"wrote {out} ({size} bytes)")


@tenants_app.command("requests")
def tenants_requests(
    tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="How many entries, newest first.")] = 20,
) -> None:
    """List a tenant's request log (on when the tenant's settings.request_log_days > 0)."""
    _show(_call("GET", url, admin_key, f"/admin/v1/tenants/{tenant_id}/requests?limit={limit}"), as_json,
          ["id", "created_at", "model", "endpoint", "status", "key_id"])


@tenants_app.command("regions")
def tenants_regions(
    tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    allow: Annotated[list[str] | None, typer.Option("--allow", help="A region the tenant may use (repeat).")] = None,
    any_region: Annotated[bool, typer.Option("--any", help="Allow every region (clears the list).")] = False,
) -> None:
    """Set the regions whose models may serve a tenant (--allow eu-west --allow eu-central), or --any.
    Requests to a model elsewhere (directly, by alias, fallback or adapter) are refused with 403."""
    if any_region == bool(allow):
        _fail("give --allow REGION (one or more) or --any")
    body = {"allowed_regions": None if any_region else allow}
    _show(_call("PATCH", url, admin_key, f"/admin/v1/tenants/{tenant_id}", body), as_json,
          ["id", "name", "allowed_regions"])


@keys_app.command("create")
def keys_create(
    tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    role: Annotated[str, typer.Option(help="admin, member or viewer.")] = "member",
    name: Annotated[str, typer.Option(help="A label for the key.")] = "key",
    expires_in: Annotated[int | None, typer.Option("--expires-in", help="Lifetime in seconds.")] = None,
) -> None:
    """Issue a key. The secret is printed once and cannot be shown again."""
    body: dict[str, Any] = {"name": name, "role": role}
    if expires_in is not None:
        body["expires_in_s"] = expires_in
    _show(_call("POST", url, admin_key, f"/admin/v1/tenants/{tenant_id}/keys", body), as_json,
          ["id", "name", "role", "key"])


@keys_app.command("list")
def keys_list(tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False
              ) -> None:
    """List a tenant's keys (never their secrets)."""
    _show(_call("GET", url, admin_key, f"/admin/v1/tenants/{tenant_id}/keys"), as_json,
          ["id", "name", "role", "hint", "revoked_at", "last_used_at"])


@keys_app.command("revoke")
def keys_revoke(tenant_id: str, key_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None,
                as_json: JsonOpt = False) -> None:
    """Revoke a key; it stops working within a second everywhere."""
    _show(_call("DELETE", url, admin_key, f"/admin/v1/tenants/{tenant_id}/keys/{key_id}"), as_json,
          ["id", "name", "revoked_at"])


@platform_keys_app.command("create")
def platform_keys_create(
    name: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    role: Annotated[str, typer.Option(help="admin (everything), auditor (read-only, audit and usage included, no "
                                           "tenant content) or billing (usage and its exports).")] = "auditor",
) -> None:
    """Issue a platform key (needs a platform admin key). The secret is printed once and cannot be shown again."""
    _show(_call("POST", url, admin_key, "/admin/v1/platform-keys", {"name": name, "role": role}), as_json,
          ["id", "name", "role", "key"])


@platform_keys_app.command("list")
def platform_keys_list(url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """List platform keys (never their secrets). The bootstrap TENANTLM_ADMIN_KEY is not stored, so not listed."""
    _show(_call("GET", url, admin_key, "/admin/v1/platform-keys"), as_json,
          ["id", "name", "role", "hint", "revoked_at", "last_used_at"])


@platform_keys_app.command("revoke")
def platform_keys_revoke(key_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None,
                         as_json: JsonOpt = False) -> None:
    """Revoke a platform key; it stops working within a second everywhere."""
    _show(_call("DELETE", url, admin_key, f"/admin/v1/platform-keys/{key_id}"), as_json,
          ["id", "name", "role", "revoked_at"])


@encryption_app.command("status")
def encryption_status(tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None,
                      as_json: JsonOpt = False) -> None:
    """Show a tenant's data-key versions and its KEK provider (never key material)."""
    data = _call("GET", url, admin_key, f"/admin/v1/tenants/{tenant_id}/encryption")
    _show(data if as_json else data.get("versions", []), as_json, ["version", "state", "kek_ref", "created_at"])


@encryption_app.command("rotate")
def encryption_rotate(
    tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    kek: Annotated[bool, typer.Option("--kek", help="Rotate the key-encryption key (rewraps data keys only) "
                                      "instead of the data key.")] = False,
    rewrap: Annotated[bool, typer.Option(help="After a data-key rotation, move old records to the new key in the "
                                         "background.")] = True,
) -> None:
    """Rotate a tenant's data key (new writes use the new version; old records stay readable) or its KEK."""
    body = {"target": "key_encryption_key" if kek else "data_key", "rewrap": rewrap}
    data = _call("POST", url, admin_key, f"/admin/v1/tenants/{tenant_id}/encryption/rotate", body)
    _show(data if as_json else data.get("versions", []), as_json, ["version", "state", "kek_ref", "created_at"])


@limits_app.command("get")
def limits_get(tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False
               ) -> None:
    """Show a tenant's effective limits (its plan's, with its overrides on top)."""
    data = _call("GET", url, admin_key, f"/admin/v1/tenants/{tenant_id}/limits")
    _show(data if as_json else [{"limit": k, "value": v} for k, v in data.items()
                                if k not in {"object", "tenant_id", "overrides", "end_user"}],
          as_json, ["limit", "value"])


@limits_app.command("set")
def limits_set(
    tenant_id: str,
    values: Annotated[str, typer.Argument(help='JSON object, e.g. \'{"rpm": 600, "monthly_cost_budget_usd": 50}\'; '
                                          'null makes a limit unlimited.')],
    url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Merge limits into a tenant's overrides (platform key; a tenant admin may send only "end_user")."""
    data = _call("PUT", url, admin_key, f"/admin/v1/tenants/{tenant_id}/limits", _json_arg(values, "VALUES"))
    _show(data if as_json else [{"limit": k, "value": v} for k, v in data.items()
                                if k not in {"object", "tenant_id", "overrides", "end_user"}],
          as_json, ["limit", "value"])


@limits_app.command("plans")
def limits_plans(url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """List the plans."""
    data = _call("GET", url, admin_key, "/admin/v1/plans")
    _show(data if as_json else [{"name": p["name"], "limits": json.dumps(p["limits"], sort_keys=True)}
                                for p in data["data"]], as_json, ["name", "limits"])


@limits_app.command("set-plan")
def limits_set_plan(
    name: str,
    values: Annotated[str, typer.Argument(help="JSON object of the plan's limits.")],
    description: Annotated[str, typer.Option(help="What the plan is for.")] = "",
    url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create or replace a plan."""
    data = _call("PUT", url, admin_key, f"/admin/v1/plans/{name}",
                 {"description": description, "limits": _json_arg(values, "VALUES")})
    _show(data, as_json, ["name", "description"])


@audit_app.command("list")
def audit_list(
    url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's entries, on its own chain (a "
                                               "tenant admin key must name its own tenant).")] = None,
    after: Annotated[int, typer.Option(help="Entries after this sequence number (the tenant's own with --tenant).")
                     ] = 0,
    limit: Annotated[int, typer.Option(help="At most this many entries.")] = 100,
) -> None:
    """List audit entries in order."""
    base = f"/admin/v1/tenants/{quote(tenant, safe='')}/audit" if tenant else "/admin/v1/audit"
    data = _call("GET", url, admin_key, f"{base}?after={after}&limit={limit}")
    _show(data if as_json else data.get("data", []), as_json, ["seq", "created_at", "actor", "tenant_id", "action"])


@audit_app.command("verify")
def audit_verify(
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="The server's data dir (holds the audit "
                                                  "signing public keys, and the SQLite database by default).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Verify only this tenant's chain, read in the "
                                               "tenant's scope (no signing key needed).")] = None,
    export: Annotated[Path | None, typer.Option("--export", help="Verify a tenant's audit export (JSON lines from "
                                                "/admin/v1/tenants/ID/audit/export, or audit.jsonl of a tenant "
                                                "export) alone, without the database.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recompute the audit hash chains, reading the database directly: the platform chain and its signed
    checkpoints, and every tenant's chain (or, with --tenant, one tenant's chain; with --export, a tenant's export).

    Exit 0 when intact, 1 when tampered (the first bad entry is named), 2 when it cannot check."""
    from tenantlm.audit import run_verify_cli, run_verify_export_cli
    from tenantlm.settings import load_settings

    if export is not None:
        if tenant is not None or data_dir is not None or config is not None:
            _fail("--export reads only the file: drop --tenant, --data-dir and --config", 2)
        raise typer.Exit(run_verify_export_cli(path=export, as_json=as_json))
    try:
        settings = load_settings(config, data_dir=data_dir)
    except ValueError as exc:
        _fail(str(exc), 2)
    url = settings.database_migrate_url or settings.sql_url
    raise typer.Exit(run_verify_cli(database_url=url, data_dir=settings.data_dir, as_json=as_json, tenant_id=tenant))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
