"""Erasing and exporting everything of one end user of a tenant (GDPR erasure and access for a person).

An end user's content lives in several capabilities; each one that holds some is an :class:`EndUserContent`
(``erase_end_user`` deletes it and says how many records went, ``export_end_user`` returns it decrypted), registered
here under a name: ``memories``, ``responses``, ``request_log``, ``record`` (the end user's first/last-seen row),
and whatever a later capability adds (conversations). Erasure runs them all, audits the start and the end with the
counts, and leaves the tenant, its keys and its other end users untouched.

How erased bytes leave the disk (rewritten, not shredded with a key of the person's own): the rows are deleted; on
SQLite the server then checkpoints the write-ahead log and the database runs with ``secure_delete`` (a deleted
record's bytes are overwritten with zeros), so the sealed bytes are in no file of the data dir afterwards. A key per
end user would also reach backups taken before the erasure, but it would add a key unwrap to every request of every
end user and a key per person to the keyring; rewriting keeps the one data key per tenant, and a backup is as old as
its retention. On Postgres the deleted tuples stay in their pages until VACUUM reclaims them (autovacuum); the
sealed bytes there are readable only with the tenant's data key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tenantlm.errors import InvalidRequest
from tenantlm.observability.logging import request_id_var
from tenantlm.tenancy.end_users import MAX_END_USER_LEN
from tenantlm.tenancy.service import AuditSink, TenancyService

FORMAT = "tenantlm-end-user-export/1"


class EndUserContent(Protocol):
    async def erase_end_user(self, *, tenant_id: str, end_user: str) -> int: ...

    async def export_end_user(self, *, tenant_id: str, end_user: str) -> list[dict[str, Any]]: ...


class DerivedEndUserContent(Protocol):
    """Copies made from an end user's requests that are not records of their own (cached answers): erased with the
    end user, not exported (the records they were made from are)."""

    async def erase_end_user(self, *, tenant_id: str, end_user: str) -> int: ...


class EndUserEraser:
    def __init__(self, *, tenancy: TenancyService, contents: dict[str, EndUserContent], audit: AuditSink,
                 after_erase: Callable[[], Awaitable[None]] | None = None,
                 derived: dict[str, DerivedEndUserContent] | None = None) -> None:
        self.tenancy = tenancy
        self.contents = contents
        self.derived = derived or {}
        self.audit = audit
        self.after_erase = after_erase  # makes deleted bytes leave the disk (the SQLite WAL checkpoint)

    def add(self, name: str, content: EndUserContent) -> None:
        """Register another capability holding end-user content (e.g. conversations)."""
        self.contents[name] = content

    async def erase(self, *, tenant_id: str, end_user: str, actor: str) -> dict[str, Any]:
        await self.tenancy.get_tenant(tenant_id=tenant_id)
        end_user = _checked(end_user)
        rid = request_id_var.get()
        await self.audit.append(actor=actor, action="end_user.erase_started", tenant_id=tenant_id, request_id=rid,
                                details={"end_user": end_user})
        erasers: dict[str, DerivedEndUserContent] = {**self.contents, **self.derived}
        erased = {name: await content.erase_end_user(tenant_id=tenant_id, end_user=end_user)
                  for name, content in erasers.items()}
        if self.after_erase is not None:
            await self.after_erase()
        await self.audit.append(actor=actor, action="end_user.erased", tenant_id=tenant_id, request_id=rid,
                                details={"end_user": end_user, "records": erased})
        return {"object": "end_user.erased", "tenant_id": tenant_id, "end_user": end_user, "erased": erased}

    async def export(self, *, tenant_id: str, end_user: str, actor: str) -> dict[str, Any]:
        await self.tenancy.get_tenant(tenant_id=tenant_id)
        end_user = _checked(end_user)
        data = {name: await content.export_end_user(tenant_id=tenant_id, end_user=end_user)
                for name, content in self.contents.items()}
        await self.audit.append(actor=actor, action="end_user.exported", tenant_id=tenant_id,
                                request_id=request_id_var.get(),
                                details={"end_user": end_user, "records": {n: len(v) for n, v in data.items()}})
        return {"object": "end_user.export", "format": FORMAT, "tenant_id": tenant_id, "end_user": end_user, **data}


def _checked(end_user: str) -> str:
    """The same rule as a request naming its end user: printable, 1 to 256 characters."""
    if not end_user or len(end_user) > MAX_END_USER_LEN or not end_user.isprintable():
        raise InvalidRequest(f"an end user id is a printable string of 1 to {MAX_END_USER_LEN} characters",
                             param="end_user")
    return end_user
