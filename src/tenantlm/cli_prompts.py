"""``tenantlm prompts``: the platform's base prompts (versions, labels) and tenants' overrides."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from tenantlm.cli_support import DEFAULT_URL, JsonOpt, KeyOpt, UrlOpt, _call, _fail, _json_arg, _show

prompts_app = typer.Typer(help="Prompt templates: the platform's base prompts (versions, labels) and tenant overrides.",
                          no_args_is_help=True)
TemplateOpt = Annotated[str | None, typer.Option("--template", help="Instructions text with {{variable}} placeholders "
                                                 "and {% block name %}default{% endblock %} blocks.")]
TemplateFileOpt = Annotated[Path | None, typer.Option("--template-file", help="Read the template from this file "
                                                      "(a .json file holds messages: [{\"role\", \"content\"}]).")]
VariablesOpt = Annotated[str | None, typer.Option("--variables", help='JSON schema of the variables, e.g. \'{"name": '
                                                  '{"type": "string", "required": true}}\'.')]
ModelOpt = Annotated[str | None, typer.Option("--model", help='JSON model settings, e.g. \'{"model": "gpt-4o-mini", '
                                              '"temperature": 0.2}\'.')]
VersionOpt = Annotated[str | None, typer.Option("--version", help="This version rather than the one labelled "
                                                "production.")]
PROMPT_COLUMNS = ["id", "name", "version", "latest_version", "labels"]
OVERRIDE_COLUMNS = ["tenant_id", "prompt_id", "version", "latest_version", "labels"]


def _template(text: str | None, path: Path | None) -> Any:
    if (text is None) == (path is None):
        _fail("give the template with exactly one of --template and --template-file")
    if path is None:
        return text
    content = path.read_text()
    return _json_arg(content, str(path)) if path.suffix == ".json" else content


def _version_body(template: Any, variables: str | None, model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"template": template}
    if variables is not None:
        body["variables"] = _json_arg(variables, "--variables")
    if model is not None:
        body["model"] = _json_arg(model, "--model")
    return body


def _confirm(yes: bool, what: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        _fail("refusing to delete without --yes when not on a terminal")
    typer.confirm(f"Delete {what}?", abort=True)


def _with_version(path: str, version: str | None) -> str:
    return path if version is None else f"{path}?version={quote(version, safe='')}"


@prompts_app.command("create")
def prompts_create(name: str, template: TemplateOpt = None, template_file: TemplateFileOpt = None,
                   variables: VariablesOpt = None, model: ModelOpt = None, url: UrlOpt = DEFAULT_URL,
                   admin_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Create a base prompt (platform key): version 1, labelled production."""
    body = {"name": name, **_version_body(_template(template, template_file), variables, model)}
    _show(_call("POST", url, admin_key, "/admin/v1/prompts", body), as_json, PROMPT_COLUMNS)


@prompts_app.command("list")
def prompts_list(url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """List the base prompts with their labels."""
    _show(_call("GET", url, admin_key, "/admin/v1/prompts?limit=1000"), as_json,
          ["id", "name", "latest_version", "labels"])


@prompts_app.command("get")
def prompts_get(prompt_id: str, version: VersionOpt = None, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None,
                as_json: JsonOpt = False) -> None:
    """Show a base prompt with one version's template (--json for the template and variables)."""
    path = _with_version(f"/admin/v1/prompts/{quote(prompt_id, safe='')}", version)
    _show(_call("GET", url, admin_key, path), as_json, PROMPT_COLUMNS)


@prompts_app.command("add-version")
def prompts_add_version(prompt_id: str, template: TemplateOpt = None, template_file: TemplateFileOpt = None,
                        variables: VariablesOpt = None, model: ModelOpt = None, url: UrlOpt = DEFAULT_URL,
                        admin_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Add an immutable version to a base prompt; no label moves (use `label`)."""
    body = _version_body(_template(template, template_file), variables, model)
    _show(_call("POST", url, admin_key, f"/admin/v1/prompts/{quote(prompt_id, safe='')}/versions", body), as_json,
          PROMPT_COLUMNS)


@prompts_app.command("label")
def prompts_label(prompt_id: str, label: str, version: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None,
                  as_json: JsonOpt = False) -> None:
    """Point a base prompt's label (e.g. production) at a version."""
    path = f"/admin/v1/prompts/{quote(prompt_id, safe='')}/labels/{quote(label, safe='')}"
    _show(_call("PUT", url, admin_key, path, {"version": version}), as_json, PROMPT_COLUMNS)


@prompts_app.command("delete")
def prompts_delete(prompt_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
                   yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False) -> None:
    """Delete a base prompt, all its versions, and every tenant's override of it."""
    _confirm(yes, f"prompt {prompt_id} with every tenant's override of it")
    _show(_call("DELETE", url, admin_key, f"/admin/v1/prompts/{quote(prompt_id, safe='')}"), as_json)


def _override_path(tenant_id: str, prompt_id: str) -> str:
    return f"/admin/v1/tenants/{quote(tenant_id, safe='')}/prompts/{quote(prompt_id, safe='')}"


@prompts_app.command("override")
def prompts_override(
    tenant_id: str, prompt_id: str,
    block: Annotated[list[str] | None, typer.Option("--block", help="NAME=TEXT: fill a block the base declares "
                                                    "(repeat for several).")] = None,
    template: TemplateOpt = None, template_file: TemplateFileOpt = None,
    url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Add a version to a tenant's override of a prompt: fill blocks (--block) or replace the whole template. The
    first version is labelled production; later ones move no label (use `override-label`)."""
    if block and (template is not None or template_file is not None):
        _fail("give either --block or a template, not both")
    if block:
        pairs = [b.partition("=") for b in block]
        if any(not sep or not name for name, sep, _ in pairs):
            _fail("--block takes NAME=TEXT")
        body: dict[str, Any] = {"blocks": {name: text for name, _, text in pairs}}
    else:
        body = {"template": _template(template, template_file)}
    _show(_call("PUT", url, admin_key, _override_path(tenant_id, prompt_id), body), as_json, OVERRIDE_COLUMNS)


@prompts_app.command("override-get")
def prompts_override_get(tenant_id: str, prompt_id: str, version: VersionOpt = None, url: UrlOpt = DEFAULT_URL,
                         admin_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Show a tenant's override of a prompt (--json for its blocks or template)."""
    path = _with_version(_override_path(tenant_id, prompt_id), version)
    _show(_call("GET", url, admin_key, path), as_json, OVERRIDE_COLUMNS)


@prompts_app.command("override-list")
def prompts_override_list(tenant_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None,
                          as_json: JsonOpt = False) -> None:
    """List a tenant's overrides."""
    path = f"/admin/v1/tenants/{quote(tenant_id, safe='')}/prompts"
    _show(_call("GET", url, admin_key, path), as_json, ["prompt_id", "latest_version", "labels"])


@prompts_app.command("override-label")
def prompts_override_label(tenant_id: str, prompt_id: str, label: str, version: str, url: UrlOpt = DEFAULT_URL,
                           admin_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Point a label of a tenant's override (production is the one requests use) at one of its versions."""
    path = f"{_override_path(tenant_id, prompt_id)}/labels/{quote(label, safe='')}"
    _show(_call("PUT", url, admin_key, path, {"version": version}), as_json, OVERRIDE_COLUMNS)


@prompts_app.command("override-delete")
def prompts_override_delete(tenant_id: str, prompt_id: str, url: UrlOpt = DEFAULT_URL, admin_key: KeyOpt = None,
                            as_json: JsonOpt = False,
                            yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False
                            ) -> None:
    """Delete a tenant's override of a prompt (every version); the tenant gets the base prompt again."""
    _confirm(yes, f"tenant {tenant_id}'s override of {prompt_id}")
    _show(_call("DELETE", url, admin_key, _override_path(tenant_id, prompt_id)), as_json)
