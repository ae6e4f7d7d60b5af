"""A long-term memory and the tenant setting that turns long-term memory on."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from tenantlm.conversations.policy import memory_policy
from tenantlm.errors import InvalidRequest
from tenantlm.tenancy.models import Tenant

MAX_TEXT = 2000


@dataclass(frozen=True, slots=True)
class Memory:
    """One fact about one end user of one tenant."""

    id: str
    end_user: str
    text: str
    source: str | None
    created_at: float
    score: float | None = None  # set by a search

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": "memory", "end_user": self.end_user, "text": self.text,
                               "source": self.source, "created_at": int(self.created_at)}
        if self.score is not None:
            out["score"] = round(self.score, 6)
        return out


def new_memory_id() -> str:
    """``mem_`` and 16 hex digits: 62 random bits, which are also the memory's key in its vector index."""
    return f"mem_{secrets.randbits(62):016x}"


def index_key(memory_id: str) -> int:
    """The integer a memory is held under in its (tenant, end user) vector and keyword indexes."""
    return int(memory_id.removeprefix("mem_"), 16)


def memory_id_of(key: int) -> str:
    """The memory id held under ``key`` (the inverse of :func:`index_key`)."""
    return f"mem_{key:016x}"


def long_term_enabled(tenant: Tenant) -> bool:
    """The tenant setting ``memory.long_term`` (validated by ``memory.policy``, which owns the ``memory`` setting)."""
    return memory_policy(tenant.settings).long_term


def check_text(text: Any, param: str = "text") -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest(f"{param} must be a non-empty string", param=param)
    if len(text) > MAX_TEXT:
        raise InvalidRequest(f"{param} must be at most {MAX_TEXT} characters", param=param)
    return text.strip()
