"""What every ``tenantlm`` command that talks to a running server shares: where the server is, the common options,
errors printed as one line with an exit status (2 for the request's fault, 1 for the server's or the network's), and
tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

DEFAULT_URL = "http://127.0.0.1:8080"
URL_HELP = (f"Commands that manage a running server talk to it at {DEFAULT_URL} unless --url or the TENANTLM_URL "
            "environment variable names another; they authenticate with --admin-key or TENANTLM_ADMIN_KEY.")
UrlOpt = Annotated[str, typer.Option("--url", envvar="TENANTLM_URL",
                                     help="Base URL of the server to manage (else TENANTLM_URL, else the default).")]
KeyOpt = Annotated[str | None, typer.Option("--admin-key", envvar="TENANTLM_ADMIN_KEY", show_default=False,
                                            help="Platform admin key (or a tenant admin key).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON response.")]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"tenantlm: error: {message}", err=True)
    raise typer.Exit(code)


def _send(method: str, url: str, key: str | None, path: str, *, no_key: str, timeout: float,
          **kw: Any) -> httpx.Response:
    """One authenticated request; an HTTP error answer or an unreachable server ends the command with its message
    (exit 2 for the caller's mistakes, 1 for the server's)."""
    if not key:
        _fail(no_key)
    try:
        resp = httpx.request(method, url.rstrip("/") + path, timeout=timeout,
                             headers={"authorization": f"Bearer {key}"}, **kw)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc.__class__.__name__}")
    if resp.status_code >= 400:
        try:
            data = resp.json()
            message = data.get("error", {}).get("message", data) if isinstance(data, dict) else data
        except ValueError:
            message = resp.text[:200]
        _fail(f"HTTP {resp.status_code}: {message}", 2 if resp.status_code < 500 else 1)
    return resp


def _call(method: str, url: str, key: str | None, path: str, body: dict[str, Any] | None = None) -> Any:
    resp = _send(method, url, key, path, no_key="no admin key: pass --admin-key or set TENANTLM_ADMIN_KEY",
                 timeout=30, json=body)
    try:
        return resp.json()
    except ValueError:
        _fail(f"HTTP {resp.status_code} with a non-JSON body")


def _download(url: str, key: str | None, method: str, path: str, out: Path) -> int:
    """Stream a binary response to ``out`` (written to a temp file, renamed when complete); returns its size."""
    if not key:
        _fail("no admin key: pass --admin-key or set TENANTLM_ADMIN_KEY")
    tmp = out.with_name(out.name + ".part")
    try:
        with httpx.stream(method, url.rstrip("/") + path, timeout=300,
                          headers={"authorization": f"Bearer {key}"}) as resp:
            if resp.status_code >= 400:
                resp.read()
                try:
                    message = resp.json().get("error", {}).get("message", resp.text)
                except ValueError:
                    message = resp.text[:200]
                _fail(f"HTTP {resp.status_code}: {message}", 2 if resp.status_code < 500 else 1)
            size = 0
            with tmp.open("wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
                    size += len(chunk)
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        _fail(f"cannot reach {url}: {exc.__class__.__name__}")
    tmp.replace(out)
    return size


def _show(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    if isinstance(data, list):
        rows = data
    else:
        rows = data["data"] if isinstance(data, dict) and data.get("object") == "list" else [data]
    if not rows:
        typer.echo("(none)")
        return
    cols = columns or list(rows[0])
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        typer.echo("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)))


def _json_arg(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        _fail(f"{name} must be JSON")
