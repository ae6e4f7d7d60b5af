"""What identifies a cached answer: the request reduced to what affects the output, keyed per tenant.

The entry key is ``HMAC-SHA256(tenant secret, canonical JSON of [tenant, end user when personal, request])``. The
tenant secret is derived from the tenant's data key (``Keyring.derive_key``), so equal requests of two tenants never
share a key, someone who reads the backend cannot test a guessed prompt against it, a data-key rotation starts the
tenant's cache afresh and a shred makes its keys underivable.

The request is normalised to the fields that affect the answer: every field of the body except those that only
steer delivery or attribution (``_DELIVERY``), with ``model`` replaced by the catalog entry the name resolved to (an
alias shares its target's entries). Unknown fields are kept: what the server does not know may change the answer.

A semantic space is the same key over the request with the last user message's text left out: two requests are
compared by meaning only when everything else (system prompt, history, parameters, model, end user when personal)
is identical, and only that last message is embedded.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

JSON = dict[str, Any]
_DELIVERY = frozenset({"stream", "stream_options", "user", "safety_identifier", "metadata", "store", "service_tier",
                       "prompt_cache_key", "prompt_cache_retention", "model"})
SEMANTIC_MAX_CHARS = 1000  # longer last messages are not embedded: the embedder would read only their beginning


def cacheable(body: JSON) -> bool:
    """Only answers that are a function of the request alone: no tools (whose results and side effects live outside
    the request), one choice. Streamed or not is delivery: both share an entry."""
    if body.get("n") not in (None, 1):
        return False
    return not any(body.get(f) for f in ("tools", "tool_choice", "functions", "function_call"))


def normalised(body: JSON, model: str) -> JSON:
    out = {k: v for k, v in body.items() if k not in _DELIVERY and v is not None}
    out["model"] = model
    return out


def entry_key(secret: bytes, *, tenant_id: str, partition: str | None, request: JSON) -> str:
    return _mac(secret, ["exact", tenant_id, partition, request])


def semantic_text(body: JSON) -> str | None:
    """The text compared by meaning: the last message's, when it is the user's plain text of a modest length."""
    messages = body.get("messages") or []
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    text = _text(messages[-1].get("content"))
    if text is None or not text.strip() or len(text) > SEMANTIC_MAX_CHARS:
        return None
    return " ".join(text.split())


def space_key(secret: bytes, *, tenant_id: str, partition: str | None, request: JSON) -> str:
    messages = list(request.get("messages") or [])
    rest = {**request, "messages": [*messages[:-1], {**messages[-1], "content": None}]}
    return _mac(secret, ["semantic", tenant_id, partition, rest])


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "\n".join(str(p.get("text", "")) for p in content)
    return None  # images, audio, files: not compared by meaning


def _mac(secret: bytes, parts: list[Any]) -> str:
    message = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()
