"""A base version and a tenant's override put together (``compose``), once per cache entry, and one request's
variables rendered into it (``render``), on every request.

Resolution order (the contract): a request's ``version`` pins the base version, else the base's ``production`` label
picks it; the tenant's override, at its own ``production`` label, applies on top: its ``blocks`` fill the blocks the
base version declares (blocks the version does not declare are left out), or its ``template`` replaces the base's
whole template. The base version's variables schema and model settings hold either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tenantlm.errors import InvalidRequest
from tenantlm.metering.models import PromptUse
from tenantlm.prompts.models import Schema, Shape, bind, fill_parts, parse_template, shape_variables
from tenantlm.prompts.template import Var, flatten
from tenantlm.prompts.template import render as substitute

JSON = dict[str, Any]
Flat = tuple[tuple[str | None, tuple[str | Var, ...]], ...]


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a request for (tenant, prompt, version) renders from: cached, and rendered per request."""

    use: PromptUse
    messages: Flat  # role None: a text template, which becomes instructions
    schema: Schema
    model: JSON


@dataclass(frozen=True, slots=True)
class Rendered:
    use: PromptUse
    instructions: str | None
    messages: list[JSON]
    model: JSON
    echo: JSON = field(default_factory=dict)  # ``prompt`` as the response shows it: id, base version, variables


def compose(*, prompt_id: str, version: int, template: Any, schema: Schema, model: JSON | None,
            override_version: int | None, override: Mapping[str, Any] | None) -> Resolved:
    _stored, shape = parse_template(template)
    fills: dict[str, tuple[str | Var, ...]] = {}
    if override is not None and "template" in override:
        _stored, shape = parse_template(override["template"])
        _check_fits(shape, schema, version)
    elif override is not None:
        for name, text in override["blocks"].items():
            parts = fill_parts(text, f"blocks.{name}")
            fills[name] = tuple(p for p in parts if isinstance(p, str | Var))
        _check_fits(((None, tuple(p for v in fills.values() for p in v)),), schema, version)
    flat = tuple((role, flatten(parts, fills)) for role, parts in shape)
    use = PromptUse(id=prompt_id, version=str(version),
                    override_version=None if override_version is None else str(override_version))
    return Resolved(use=use, messages=flat, schema=schema, model=dict(model or {}))


def _check_fits(shape: Shape, schema: Schema, version: int) -> None:
    undeclared = sorted(shape_variables(shape) - set(schema))
    if undeclared:
        raise InvalidRequest(f"this tenant's override uses '{{{{{undeclared[0]}}}}}', which version {version} of the "
                             "base prompt does not declare; pin another version or update the override",
                             param="prompt.version")


def render(resolved: Resolved, variables: object) -> Rendered:
    """The request's variables checked against the schema and substituted as plain text."""
    values = bind(resolved.schema, variables)
    instructions: str | None = None
    messages: list[JSON] = []
    for role, parts in resolved.messages:
        text = substitute(parts, values)
        if role is None:
            instructions = text
        else:
            messages.append({"role": role, "content": text})
    shown = {"id": resolved.use.id, "version": resolved.use.version, "variables": variables or {}}
    return Rendered(use=resolved.use, instructions=instructions, messages=messages, model=resolved.model, echo=shown)


_CHAT_SETTINGS = {"model": "model", "temperature": "temperature", "top_p": "top_p", "max_output_tokens": "max_tokens"}


def chat_body(body: Mapping[str, Any], rendered: Rendered) -> JSON:
    """A chat completion request with its ``prompt`` rendered in: the prompt's instructions as a system message and
    its messages, before the request's own messages; the prompt's model settings where the request sets none.
    ``prompt`` itself is taken out (the upstream never sees it)."""
    out = {k: v for k, v in body.items() if k != "prompt"}
    for setting, name in _CHAT_SETTINGS.items():
        if setting in rendered.model and out.get(name) is None and not (
                name == "max_tokens" and out.get("max_completion_tokens") is not None):
            out[name] = rendered.model[setting]
    system = [] if rendered.instructions is None else [{"role": "system", "content": rendered.instructions}]
    own = out.get("messages", [])
    if isinstance(own, list):  # anything else stays as sent, for the request's validation to refuse
        out["messages"] = [*system, *rendered.messages, *own]
    return out
