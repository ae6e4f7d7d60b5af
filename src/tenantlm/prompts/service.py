"""Prompt templates: the platform's base prompts (immutable numbered versions, movable labels), each tenant's
override of them (its own versions and labels, sealed with the tenant's data key), and their use by a request.

Labels: ``production`` points at version 1 when a prompt (or a tenant's override) is created; a new version moves no
label; a label moves only when someone puts it (``move_label``), and that is audited. A request's
``prompt: {"id", "version"?, "variables"}`` is resolved (``compose``) and rendered (``render``); what was resolved for
(tenant, prompt, version) is cached in-process for ``ttl_s`` and dropped at once on this replica whenever the prompt
or that tenant's override changes (other replicas see a change within ``ttl_s``).

Isolation: an override is read only in its tenant's transaction, with the tenant's data key; a tenant never reaches
another tenant's override, whose existence it cannot tell from a missing one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from tenantlm.cache import TtlCache
from tenantlm.errors import InvalidRequest, NotFound
from tenantlm.prompts.compose import Rendered, Resolved, compose, render
from tenantlm.prompts.models import (
    PRODUCTION,
    check_declared,
    fill_parts,
    new_prompt_id,
    parse_label,
    parse_model_settings,
    parse_name,
    parse_override,
    parse_schema,
    parse_template,
    parse_version,
    shape_blocks,
)
from tenantlm.prompts.store import OverrideHead, PromptRow, PromptStore, VersionRow

JSON = dict[str, Any]
OVERRIDE_KIND = "prompt_override"
_REFERENCE_FIELDS = frozenset({"id", "version", "variables"})


class Sealer(Protocol):
    async def seal(self, *, tenant_id: str, kind: str, record_id: str, plaintext: bytes) -> bytes: ...
    async def open(self, *, tenant_id: str, kind: str, record_id: str, ciphertext: bytes) -> bytes: ...
    async def rewrap_record(self, *, tenant_id: str, kind: str, record_id: str,
                            ciphertext: bytes) -> bytes | None: ...


class AuditSink(Protocol):
    async def append(self, *, actor: str, action: str, tenant_id: str | None, request_id: str | None,
                     details: dict[str, Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class Reference:
    """A request's ``prompt``: which prompt, the base version it pins (None: the production label), its variables."""

    id: str
    version: int | None
    variables: object


def parse_reference(value: object) -> Reference:
    if not isinstance(value, dict):
        raise InvalidRequest("Invalid type for 'prompt': expected an object with 'id'.", param="prompt")
    unknown = sorted(set(value) - _REFERENCE_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown parameter: 'prompt.{unknown[0]}'.", param=f"prompt.{unknown[0]}")
    prompt_id = value.get("id")
    if not isinstance(prompt_id, str) or not prompt_id or len(prompt_id) > 64:
        raise InvalidRequest("Invalid 'prompt.id': expected a prompt id (pmpt_…).", param="prompt.id")
    version = value.get("version")
    return Reference(id=prompt_id, version=None if version is None else parse_version(version, "prompt.version"),
                     variables=value.get("variables"))


def _record(prompt_id: str, version: int) -> str:
    return f"{prompt_id}/{version}"


class PromptsService:
    def __init__(self, *, store: PromptStore, sealer: Sealer, audit: AuditSink, ttl_s: float = 5.0,
                 max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.sealer = sealer
        self.audit = audit
        self.clock = clock
        self.cache: TtlCache[tuple[str, str, int], Resolved] = TtlCache(ttl_s=ttl_s, max_entries=max_entries)

    # --- the platform's prompts -----------------------------------------------------------------------------------
    async def create(self, *, body: Mapping[str, Any], actor: str, request_id: str | None) -> JSON:
        name = parse_name(body.get("name"))
        prompt_id = new_prompt_id()
        first = self._version_row(prompt_id, 1, {k: v for k, v in body.items() if k != "name"})
        await self.store.create(prompt_id=prompt_id, name=name, first=first)
        await self.audit.append(actor=actor, action="prompt.created", tenant_id=None, request_id=request_id,
                                details={"prompt_id": prompt_id, "name": name, "version": "1",
                                         "labels": {PRODUCTION: "1"}})
        return await self.get(prompt_id=prompt_id, version="1")

    async def add_version(self, *, prompt_id: str, body: Mapping[str, Any], actor: str,
                          request_id: str | None) -> JSON:
        await self._prompt(prompt_id)
        number = await self.store.add_version(row=self._version_row(prompt_id, 0, body))
        self._forget(prompt_id)
        await self.audit.append(actor=actor, action="prompt.version_created", tenant_id=None, request_id=request_id,
                                details={"prompt_id": prompt_id, "version": str(number)})
        return await self.get(prompt_id=prompt_id, version=str(number))

    def _version_row(self, prompt_id: str, version: int, body: Mapping[str, Any]) -> VersionRow:
        unknown = sorted(set(body) - {"template", "variables", "model"})
        if unknown:
            raise InvalidRequest(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0])
        if "template" not in body:
            raise InvalidRequest("Missing required parameter: 'template'.", param="template")
        stored, shape = parse_template(body["template"])
        schema = parse_schema(body.get("variables"))
        check_declared(shape, schema, "template")
        return VersionRow(prompt_id=prompt_id, version=version, template=stored,
                          variables={n: v.public() for n, v in schema.items()},
                          model=parse_model_settings(body.get("model")), created_at=self.clock())

    async def get(self, *, prompt_id: str, version: str | None = None) -> JSON:
        """The prompt with one version's content: ``version``, else the one ``production`` points at."""
        prompt = await self._prompt(prompt_id)
        number = prompt.labels.get(PRODUCTION, prompt.latest) if version is None else parse_version(version)
        row = await self._version(prompt_id, number, "version")
        return _prompt_public(prompt, row)

    async def list_prompts(self, *, limit: int, after: str | None) -> list[JSON]:
        return [_prompt_head(p) for p in await self.store.list_prompts(limit=limit, after=after)]

    async def move_label(self, *, prompt_id: str, label: str, body: Mapping[str, Any], actor: str,
                         request_id: str | None) -> JSON:
        prompt = await self._prompt(prompt_id)
        label, number = parse_label(label), parse_version(body.get("version"))
        await self._version(prompt_id, number, "version")
        await self.store.set_label(prompt_id=prompt_id, label=label, version=number)
        self._forget(prompt_id)
        await self.audit.append(actor=actor, action="prompt.label_moved", tenant_id=None, request_id=request_id,
                                details={"prompt_id": prompt_id, "label": label, "version": str(number),
                                         "previous": _str(prompt.labels.get(label))})
        return await self.get(prompt_id=prompt_id, version=str(number))

    async def delete(self, *, prompt_id: str, actor: str, request_id: str | None) -> JSON:
        if not await self.store.delete(prompt_id=prompt_id):
            raise NotFound(f"no prompt {prompt_id!r}", param="prompt_id")
        self._forget(prompt_id)
        await self.audit.append(actor=actor, action="prompt.deleted", tenant_id=None, request_id=request_id,
                                details={"prompt_id": prompt_id})
        return {"id": prompt_id, "object": "prompt.deleted", "deleted": True}

    async def _prompt(self, prompt_id: str, param: str = "prompt_id") -> PromptRow:
        prompt = await self.store.get(prompt_id=prompt_id)
        if prompt is None:
            raise NotFound(f"no prompt {prompt_id!r}", param=param)
        return prompt

    async def _version(self, prompt_id: str, number: int, param: str) -> VersionRow:
        row = await self.store.version(prompt_id=prompt_id, version=number)
        if row is None:
            raise NotFound(f"prompt {prompt_id!r} has no version '{number}'", param=param)
        return row

    # --- a tenant's override --------------------------------------------------------------------------------------
    async def put_override(self, *, tenant_id: str, prompt_id: str, body: Mapping[str, Any], actor: str,
                           request_id: str | None) -> JSON:
        """A new override version (the first one also gets the ``production`` label)."""
        content = parse_override(body)
        prompt = await self._prompt(prompt_id)
        base = await self._version(prompt_id, prompt.labels.get(PRODUCTION, prompt.latest), "prompt_id")
        _check_against(content, base)

        async def seal(version: int) -> bytes:
            return await self.sealer.seal(tenant_id=tenant_id, kind=OVERRIDE_KIND,
                                          record_id=_record(prompt_id, version), plaintext=orjson.dumps(content))

        number = await self.store.add_override(tenant_id=tenant_id, prompt_id=prompt_id, created_at=self.clock(),
                                               seal=seal)
        self._forget(prompt_id, tenant_id)
        await self.audit.append(actor=actor, action="prompt.override_version_created", tenant_id=tenant_id,
                                request_id=request_id,
                                details={"prompt_id": prompt_id, "version": str(number),
                                         "kind": "template" if "template" in content else "blocks",
                                         "blocks": sorted(content.get("blocks", {}))})
        return await self.get_override(tenant_id=tenant_id, prompt_id=prompt_id, version=str(number))

    async def get_override(self, *, tenant_id: str, prompt_id: str, version: str | None = None) -> JSON:
        head = await self._head(tenant_id, prompt_id)
        number = head.labels.get(PRODUCTION, head.latest) if version is None else parse_version(version)
        content, created_at = await self._override(tenant_id, prompt_id, number, "version")
        return _override_public(tenant_id, head, number, content, created_at)

    async def list_overrides(self, *, tenant_id: str) -> list[JSON]:
        return [{"object": "prompt.override", "tenant_id": tenant_id, "prompt_id": h.prompt_id,
                 "latest_version": str(h.latest), "labels": _labels(h.labels)}
                for h in await self.store.override_heads(tenant_id=tenant_id)]

    async def move_override_label(self, *, tenant_id: str, prompt_id: str, label: str, body: Mapping[str, Any],
                                  actor: str, request_id: str | None) -> JSON:
        head = await self._head(tenant_id, prompt_id)
        label, number = parse_label(label), parse_version(body.get("version"))
        await self._override(tenant_id, prompt_id, number, "version")
        await self.store.set_override_label(tenant_id=tenant_id, prompt_id=prompt_id, label=label, version=number)
        self._forget(prompt_id, tenant_id)
        await self.audit.append(actor=actor, action="prompt.override_label_moved", tenant_id=tenant_id,
                                request_id=request_id,
                                details={"prompt_id": prompt_id, "label": label, "version": str(number),
                                         "previous": _str(head.labels.get(label))})
        return await self.get_override(tenant_id=tenant_id, prompt_id=prompt_id, version=str(number))

    async def delete_override(self, *, tenant_id: str, prompt_id: str, actor: str, request_id: str | None) -> JSON:
        if not await self.store.delete_override(tenant_id=tenant_id, prompt_id=prompt_id):
            raise NotFound(f"this tenant has no override of prompt {prompt_id!r}", param="prompt_id")
        self._forget(prompt_id, tenant_id)
        await self.audit.append(actor=actor, action="prompt.override_deleted", tenant_id=tenant_id,
                                request_id=request_id, details={"prompt_id": prompt_id})
        return {"object": "prompt.override.deleted", "tenant_id": tenant_id, "prompt_id": prompt_id, "deleted": True}

    async def _head(self, tenant_id: str, prompt_id: str) -> OverrideHead:
        head = await self.store.override_head(tenant_id=tenant_id, prompt_id=prompt_id)
        if head is None:
            raise NotFound(f"this tenant has no override of prompt {prompt_id!r}", param="prompt_id")
        return head

    async def _override(self, tenant_id: str, prompt_id: str, number: int, param: str) -> tuple[JSON, float]:
        row = await self.store.override(tenant_id=tenant_id, prompt_id=prompt_id, version=number)
        if row is None:
            raise NotFound(f"this tenant's override of {prompt_id!r} has no version '{number}'", param=param)
        plain = await self.sealer.open(tenant_id=tenant_id, kind=OVERRIDE_KIND, record_id=_record(prompt_id, number),
                                       ciphertext=row.sealed)
        content: JSON = orjson.loads(plain)
        return content, row.created_at

    # --- use ------------------------------------------------------------------------------------------------------
    async def render(self, *, tenant_id: str, prompt: object) -> Rendered:
        """A request's ``prompt`` rendered for ``tenant_id`` (400 naming the variable; 404 for an unknown id)."""
        ref = parse_reference(prompt)
        resolved = await self.resolve(tenant_id=tenant_id, prompt_id=ref.id, version=ref.version)
        return render(resolved, ref.variables)

    async def resolve(self, *, tenant_id: str, prompt_id: str, version: int | None) -> Resolved:
        return await self.cache.get_or_load((tenant_id, prompt_id, version or 0),
                                            lambda: self._resolve(tenant_id, prompt_id, version))

    async def _resolve(self, tenant_id: str, prompt_id: str, version: int | None) -> Resolved:
        prompt = await self._prompt(prompt_id, "prompt.id")
        number = prompt.labels.get(PRODUCTION, prompt.latest) if version is None else version
        base = await self._version(prompt_id, number, "prompt.version")
        head = await self.store.override_head(tenant_id=tenant_id, prompt_id=prompt_id)
        over_version = None if head is None else head.labels.get(PRODUCTION)
        override = None if over_version is None else \
            (await self._override(tenant_id, prompt_id, over_version, "prompt.id"))[0]
        return compose(prompt_id=prompt_id, version=number, template=base.template,
                       schema=parse_schema(base.variables), model=base.model, override_version=over_version,
                       override=override)

    def _forget(self, prompt_id: str, tenant_id: str | None = None) -> None:
        self.cache.evict(lambda k, _v: k[1] == prompt_id and (tenant_id is None or k[0] == tenant_id))

    # --- export, erasure, key rotation ----------------------------------------------------------------------------
    async def export(self, *, tenant_id: str) -> list[JSON]:
        """Every version of every override of the tenant, opened, with the labels of its override (GDPR export)."""
        heads = {h.prompt_id: h for h in await self.store.override_heads(tenant_id=tenant_id)}
        out = []
        for row in await self.store.overrides(tenant_id=tenant_id):
            content, created_at = await self._override(tenant_id, row.prompt_id, row.version, "version")
            out.append(_override_public(tenant_id, heads[row.prompt_id], row.version, content, created_at))
        return out

    async def forget_tenant(self, *, tenant_id: str) -> None:
        await self.store.forget_tenant(tenant_id=tenant_id)
        self.cache.evict(lambda k, _v: k[0] == tenant_id)

    async def rewrap(self, *, tenant_id: str) -> int:
        """Re-seal every override version of the tenant under its active data key (after a rotation)."""
        moved = 0
        for row in await self.store.overrides(tenant_id=tenant_id):
            fresh = await self.sealer.rewrap_record(tenant_id=tenant_id, kind=OVERRIDE_KIND,
                                                   record_id=_record(row.prompt_id, row.version),
                                                   ciphertext=row.sealed)
            if fresh is not None:
                await self.store.replace_sealed(tenant_id=tenant_id, prompt_id=row.prompt_id, version=row.version,
                                                sealed=fresh)
                moved += 1
        return moved


def _check_against(content: JSON, base: VersionRow) -> None:
    """An override must fit the base's production version: blocks it declares, variables it declares."""
    _stored, shape = parse_template(base.template)
    schema = parse_schema(base.variables)
    if "template" in content:
        _s, replacement = parse_template(content["template"])
        check_declared(replacement, schema, "template")
        return
    declared = shape_blocks(shape)
    for name, text in content["blocks"].items():
        if name not in declared:
            raise InvalidRequest(f"the base prompt declares no block '{name}' (it declares "
                                 f"{', '.join(declared) or 'none'})", param=f"blocks.{name}")
        check_declared(((None, fill_parts(text, f"blocks.{name}")),), schema, f"blocks.{name}")


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)


def _labels(labels: Mapping[str, int]) -> dict[str, str]:
    return {k: str(v) for k, v in sorted(labels.items())}


def _prompt_head(p: PromptRow) -> JSON:
    return {"id": p.id, "object": "prompt", "name": p.name, "created_at": int(p.created_at),
            "latest_version": str(p.latest), "labels": _labels(p.labels)}


def _prompt_public(p: PromptRow, v: VersionRow) -> JSON:
    return {**_prompt_head(p), "version": str(v.version), "template": v.template, "variables": v.variables,
            "model": v.model, "version_created_at": int(v.created_at)}


def _override_public(tenant_id: str, head: OverrideHead, number: int, content: JSON, created_at: float) -> JSON:
    return {"object": "prompt.override", "tenant_id": tenant_id, "prompt_id": head.prompt_id,
            "latest_version": str(head.latest), "labels": _labels(head.labels), "version": str(number),
            "blocks": content.get("blocks"), "template": content.get("template"), "created_at": int(created_at)}
