"""``tenantlm models`` and ``tenantlm adapters``: a tenant's private models and LoRA adapters (platform key)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from tenantlm.cli_support import DEFAULT_URL, JsonOpt, KeyOpt, UrlOpt, _call, _show

models_app = typer.Typer(help="A tenant's private models: deployments only that tenant sees and uses.",
                         no_args_is_help=True)
adapters_app = typer.Typer(help="A tenant's LoRA adapters on a base model: served by vLLM (runtime LoRA loading) or "
                                "by the embedded llama.cpp model (GGUF adapter files).", no_args_is_help=True)


_MODEL_COLUMNS = ["id", "kind", "provider", "upstream_model", "region"]
_ADAPTER_COLUMNS = ["id", "base_model", "source", "lora_name"]


@models_app.command("create")
def models_create(
    tenant_id: str, name: str,
    provider: Annotated[str, typer.Option(help="A configured provider.")],
    upstream_model: Annotated[str, typer.Option(help="The model name the provider serves.")],
    url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    kind: Annotated[str, typer.Option(help="chat or embedding.")] = "chat",
    region: Annotated[str | None, typer.Option(help="Default: the provider's region.")] = None,
) -> None:
    """Add a private model to a tenant's catalog."""
    body: dict[str, Any] = {"name": name, "provider": provider, "upstream_model": upstream_model, "kind": kind}
    if region is not None:
        body["region"] = region
    _show(_call("POST", url, admin_key, f"/admin/v1/tenants/{tenant_id}/models", body), as_json, _MODEL_COLUMNS)


@models_app.command("list")
def models_list(tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False
                ) -> None:
    """List a tenant's private models."""
    _show(_call("GET", url, admin_key, f"/admin/v1/tenants/{tenant_id}/models"), as_json, _MODEL_COLUMNS)


@models_app.command("delete")
def models_delete(tenant_id: str, name: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None,
                  as_json: JsonOpt = False) -> None:
    """Remove a private model (refused while an adapter runs on it)."""
    _show(_call("DELETE", url, admin_key, f"/admin/v1/tenants/{tenant_id}/models/{quote(name)}"), as_json)


@adapters_app.command("create")
def adapters_create(
    tenant_id: str, name: str,
    base_model: Annotated[str, typer.Option(help="A chat model on a vLLM upstream, or the embedded local model.")],
    source: Annotated[str, typer.Option(help="vLLM: lora_path (a path on the upstream host or a HF repo); embedded "
                                             "model: a GGUF LoRA file on this server.")],
    url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Register a LoRA adapter; requests with model=NAME use it (loaded at first use)."""
    body = {"name": name, "base_model": base_model, "source": source}
    _show(_call("POST", url, admin_key, f"/admin/v1/tenants/{tenant_id}/adapters", body), as_json,
          _ADAPTER_COLUMNS)


@adapters_app.command("list")
def adapters_list(tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False
                  ) -> None:
    """List a tenant's adapters."""
    _show(_call("GET", url, admin_key, f"/admin/v1/tenants/{tenant_id}/adapters"), as_json, _ADAPTER_COLUMNS)


@adapters_app.command("delete")
def adapters_delete(tenant_id: str, name: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None,
                    as_json: JsonOpt = False) -> None:
    """Remove an adapter (unloaded wherever it is loaded)."""
    _show(_call("DELETE", url, admin_key, f"/admin/v1/tenants/{tenant_id}/adapters/{quote(name)}"), as_json)
