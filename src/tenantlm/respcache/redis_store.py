"""The scale-out cache backend: entries in the Redis the replicas share, every key under its tenant's prefix.

Keys (the tenant id is the hash tag, as in the limit store, so one tenant's keys live on one cluster slot):

    {prefix}{tenant}:e:{key}         an entry (sealed bytes), with its TTL
    {prefix}{tenant}:v:{space}       a semantic space: hash of entry key -> sealed vector; TTL renewed on each add
    {prefix}{tenant}:u:{sha256(end user)}  the entries and vectors made from one end user's requests (for erasure)

Entry keys and space names are hex digests made by the service; end users are hashed before they name a key.
Purging a tenant scans its prefix and unlinks what it finds. A space past ``max_entries`` drops random vectors.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from tenantlm.respcache.port import CacheUnavailable

P = ParamSpec("P")
T = TypeVar("T")


def _unavailable_on_error(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    @functools.wraps(method)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except redis_errors.RedisError as exc:
            raise CacheUnavailable(f"the cache's Redis failed: {type(exc).__name__}") from exc
    return wrapped


def _bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


class RedisCacheBackend:
    def __init__(self, client: Redis, *, prefix: str = "tlm:cache:", owns_client: bool = False) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("prefix must not contain braces (the tenant id is the key's hash tag)")
        self._client = client
        self._prefix = prefix
        self._owns = owns_client

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> RedisCacheBackend:
        return cls(Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0), owns_client=True, **kw)

    def _key(self, tenant_id: str, *parts: str) -> str:
        if not tenant_id or any(c in tenant_id for c in "{}*?[]\\"):
            raise ValueError("tenant_id must be non-empty and free of braces and glob characters")
        return f"{self._prefix}{{{tenant_id}}}:" + ":".join(parts)

    def _user_key(self, tenant_id: str, end_user: str) -> str:
        return self._key(tenant_id, "u", hashlib.sha256(end_user.encode()).hexdigest())

    @_unavailable_on_error
    async def get(self, *, tenant_id: str, key: str) -> bytes | None:
        value = await self._client.get(self._key(tenant_id, "e", key))
        return None if value is None else _bytes(value)

    @_unavailable_on_error
    async def put(self, *, tenant_id: str, key: str, value: bytes, end_user: str | None, ttl_s: float) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._key(tenant_id, "e", key), value, px=_ms(ttl_s))
            if end_user is not None:
                self._note_user(pipe, tenant_id, end_user, f"e:{key}", ttl_s)
            await pipe.execute()

    @_unavailable_on_error
    async def add_vector(self, *, tenant_id: str, space: str, key: str, vector: bytes, end_user: str | None,
                         ttl_s: float, max_entries: int) -> None:
        if max_entries <= 0:
            return
        name = self._key(tenant_id, "v", space)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(name, key, vector)
            pipe.pexpire(name, _ms(ttl_s))
            pipe.hlen(name)
            if end_user is not None:
                self._note_user(pipe, tenant_id, end_user, f"v:{space}:{key}", ttl_s)
            replies = await pipe.execute()
        over = int(replies[2]) - max_entries
        if over > 0:
            fields: Any = await self._client.hrandfield(name, over + 1)
            drop = [f for f in fields or () if _bytes(f) != key.encode()][:over]
            if drop:
                await self._client.hdel(name, *drop)

    @_unavailable_on_error
    async def vectors(self, *, tenant_id: str, space: str) -> list[tuple[str, bytes]]:
        found = await self._client.hgetall(self._key(tenant_id, "v", space))
        return [(_bytes(k).decode(), _bytes(v)) for k, v in found.items()]

    @_unavailable_on_error
    async def purge_tenant(self, *, tenant_id: str) -> int:
        entries = 0
        marker = self._key(tenant_id, "e", "")
        batch: list[bytes] = []
        async for name in self._client.scan_iter(match=self._key(tenant_id, "*"), count=500):
            entries += _bytes(name).startswith(marker.encode())
            batch.append(name)
            if len(batch) >= 500:
                await self._client.unlink(*batch)
                batch = []
        if batch:
            await self._client.unlink(*batch)
        return entries

    @_unavailable_on_error
    async def purge_end_user(self, *, tenant_id: str, end_user: str) -> int:
        index = self._user_key(tenant_id, end_user)
        members = [_bytes(m).decode() for m in await self._client.smembers(index)]
        entries = [self._key(tenant_id, "e", m[2:]) for m in members if m.startswith("e:")]
        async with self._client.pipeline(transaction=True) as pipe:
            for m in members:
                if m.startswith("v:"):
                    _, space, key = m.split(":", 2)
                    pipe.hdel(self._key(tenant_id, "v", space), key)
            if entries:
                pipe.unlink(*entries)
            pipe.unlink(index)
            replies = await pipe.execute()
        return int(replies[-2]) if entries else 0

    async def aclose(self) -> None:
        if self._owns:
            await self._client.aclose()

    def _note_user(self, pipe: Any, tenant_id: str, end_user: str, member: str, ttl_s: float) -> None:
        index = self._user_key(tenant_id, end_user)
        pipe.sadd(index, member)
        pipe.pexpire(index, _ms(ttl_s), gt=True)
        pipe.pexpire(index, _ms(ttl_s), nx=True)
