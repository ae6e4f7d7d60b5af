"""``tenantlm files`` and ``tenantlm vector-stores``: a tenant's knowledge from the shell.

These commands use the tenant-facing API (``/v1/files``, ``/v1/vector_stores``) with a tenant API key
(``--api-key`` / ``TENANTLM_API_KEY``), so they can do exactly what that key may do through the OpenAI SDK. Adding
files to a store uploads them, attaches them as one file batch and, unless ``--no-wait``, shows a progress bar from the
batch's ``file_counts`` until every file is done, then lists the files that failed with their ``last_error``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tenantlm.cli_support import DEFAULT_URL, JsonOpt, UrlOpt, _json_arg, _send, _show

files_app = typer.Typer(help="Upload, list, download and delete a tenant's files (with a tenant API key).",
                        no_args_is_help=True)
stores_app = typer.Typer(help="Create vector stores, add files with a progress bar, search, delete (with a tenant API "
                              "key).", no_args_is_help=True)

ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="TENANTLM_API_KEY", show_default=False,
                                               help="A tenant API key (tlm_...); else TENANTLM_API_KEY.")]
PathsArg = Annotated[list[Path], typer.Argument(help="Files to upload.", exists=True, dir_okay=False,
                                                readable=True)]
POLL_S = 0.5


def _request(method: str, url: str, key: str | None, path: str, **kw: Any) -> Any:
    return _send(method, url, key, path, no_key="no tenant API key: pass --api-key or set TENANTLM_API_KEY",
                 timeout=300, **kw)


def _upload(url: str, key: str | None, path: Path, purpose: str) -> dict[str, Any]:
    with path.open("rb") as fh:
        made: dict[str, Any] = _request("POST", url, key, "/v1/files", data={"purpose": purpose},
                                        files={"file": (path.name, fh)}).json()
    return made


# --- files --------------------------------------------------------------------------------------------------------
@files_app.command("upload")
def files_upload(paths: PathsArg, purpose: Annotated[str, typer.Option(help="OpenAI's file purpose.")] = "assistants",
                 url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Upload files; prints each file's id."""
    made = [_upload(url, api_key, p, purpose) for p in paths]
    _show(made, as_json, ["id", "filename", "bytes", "purpose"])


@files_app.command("list")
def files_list(purpose: Annotated[str | None, typer.Option(help="Only files of this purpose.")] = None,
               limit: Annotated[int, typer.Option(help="How many, newest first.")] = 100,
               url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """List the tenant's files."""
    params: dict[str, Any] = {"limit": limit, **({"purpose": purpose} if purpose else {})}
    _show(_request("GET", url, api_key, "/v1/files", params=params).json(), as_json,
          ["id", "filename", "bytes", "purpose", "created_at"])


@files_app.command("download")
def files_download(file_id: str, output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it.")],
                   url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None) -> None:
    """Write a file's content to --output."""
    content = _request("GET", url, api_key, f"/v1/files/{file_id}/content").content
    tmp = output.with_name(output.name + ".part")
    tmp.write_bytes(content)
    tmp.replace(output)
    typer.echo(f"wrote {output} ({len(content)} bytes)")


@files_app.command("delete")
def files_delete(file_id: str, url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, as_json: JsonOpt = False
                 ) -> None:
    """Delete a file (it leaves every vector store at once)."""
    _show(_request("DELETE", url, api_key, f"/v1/files/{file_id}").json(), as_json)


# --- vector stores ------------------------------------------------------------------------------------------------
@stores_app.command("create")
def stores_create(name: str, url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Create an empty vector store; add files with `tenantlm vector-stores add`."""
    made = _request("POST", url, api_key, "/v1/vector_stores", json={"name": name}).json()
    _show(made, as_json, ["id", "name", "status"])


@stores_app.command("list")
def stores_list(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 100,
                url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """List the tenant's vector stores with their file counts."""
    listed = _request("GET", url, api_key, "/v1/vector_stores", params={"limit": limit}).json()
    if not as_json:
        for row in listed["data"]:
            counts = row["file_counts"]
            row["files"] = f"{counts['completed']}/{counts['total']} done, {counts['failed']} failed"
    _show(listed, as_json, ["id", "name", "status", "files"])


@stores_app.command("add")
def stores_add(
    store_id: str, paths: PathsArg,
    attributes: Annotated[str | None, typer.Option(help="JSON object of attributes for every file added.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for ingestion with a progress bar.")] = True,
    url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Upload files, attach them to a store as one batch, show ingestion progress; exit 3 if a file failed."""
    attrs = _json_arg(attributes, "--attributes")
    ids = [_upload(url, api_key, p, "assistants")["id"] for p in paths]
    body: dict[str, Any] = {"file_ids": ids, **({"attributes": attrs} if attrs is not None else {})}
    batch = _request("POST", url, api_key, f"/v1/vector_stores/{store_id}/file_batches", json=body).json()
    if wait:
        batch = _follow(url, api_key, store_id, batch)
    _show(batch, as_json, ["id", "status", "file_counts"])
    failed = batch["file_counts"]["failed"]
    if wait and failed:
        listed = _request("GET", url, api_key, f"/v1/vector_stores/{store_id}/file_batches/{batch['id']}/files",
                          params={"filter": "failed", "limit": 100}).json()
        for row in listed["data"]:
            error = row.get("last_error") or {}
            typer.echo(f"failed: {row['id']}: {error.get('code')}: {error.get('message')}", err=True)
        raise typer.Exit(3)


def _follow(url: str, key: str | None, store_id: str, batch: dict[str, Any]) -> dict[str, Any]:
    """Poll the batch until no file is in progress, advancing a bar by the files done (completed, failed or
    cancelled)."""
    path = f"/v1/vector_stores/{store_id}/file_batches/{batch['id']}"
    counts = batch["file_counts"]
    with typer.progressbar(length=int(counts["total"]), label="ingesting", file=sys.stderr) as bar:
        shown = 0
        while True:
            counts = batch["file_counts"]
            done = counts["total"] - counts["in_progress"]
            bar.update(done - shown)
            shown = done
            if batch["status"] != "in_progress":
                return batch
            time.sleep(POLL_S)
            batch = _request("GET", url, key, path).json()


@stores_app.command("search")
def stores_search(
    store_id: str, query: str,
    max_results: Annotated[int, typer.Option("--max-results", help="1-50.")] = 5,
    filters: Annotated[str | None, typer.Option(help="JSON filter on file attributes (OpenAI's shape).")] = None,
    url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Search a vector store (hybrid dense + BM25); prints score, file and the start of each chunk."""
    body: dict[str, Any] = {"query": query, "max_num_results": max_results}
    if filters is not None:
        body["filters"] = _json_arg(filters, "--filters")
    found = _request("POST", url, api_key, f"/v1/vector_stores/{store_id}/search", json=body).json()
    if not as_json:
        for row in found["data"]:
            row["score"] = f"{row['score']:.3f}"
            row["text"] = " ".join(part["text"] for part in row["content"])[:80].replace("\n", " ")
    _show(found, as_json, ["score", "file_id", "filename", "text"])


@stores_app.command("delete")
def stores_delete(store_id: str, url: UrlOpt = DEFAULT_URL, api_key: ApiKeyOpt = None, as_json: JsonOpt = False
                  ) -> None:
    """Delete a vector store and its chunks (the files stay)."""
    _show(_request("DELETE", url, api_key, f"/v1/vector_stores/{store_id}").json(), as_json)
