"""The embedded cache backend: one process, bounded by a byte budget, least recently used out first.

Entries and semantic vectors share one LRU order and one budget (their bytes plus a fixed overhead each). Items
are kept per (tenant, space, key): ``space`` is ``""`` for entries and the semantic space for vectors, so nothing
is ever looked up without its tenant. Eviction pressure is shared: one tenant's traffic can push out another's
entries (that tenant then sees a miss, never another tenant's answer); see docs/operations.md.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

ITEM_OVERHEAD = 200  # bytes counted per item besides its value: keys, bookkeeping


@dataclass(slots=True)
class _Item:
    value: bytes
    end_user: str | None
    expires: float
    size: int


_Slot = tuple[str, str, str]  # (tenant id, space or "" for an entry, key)


class MemoryCacheBackend:
    def __init__(self, *, max_bytes: int = 64 << 20, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._clock = clock
        self._items: OrderedDict[_Slot, _Item] = OrderedDict()
        self._spaces: dict[tuple[str, str], dict[str, None]] = {}  # a space's keys, oldest first
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, *, tenant_id: str, key: str) -> bytes | None:
        item = self._live((tenant_id, "", key))
        if item is None:
            return None
        self._items.move_to_end((tenant_id, "", key))
        return item.value

    async def put(self, *, tenant_id: str, key: str, value: bytes, end_user: str | None, ttl_s: float) -> None:
        self._store((tenant_id, "", key), value, end_user, ttl_s)

    async def add_vector(self, *, tenant_id: str, space: str, key: str, vector: bytes, end_user: str | None,
                         ttl_s: float, max_entries: int) -> None:
        if not space:
            raise ValueError("a semantic space needs a name")
        keys = self._spaces.get((tenant_id, space), {})
        while key not in keys and len(keys) >= max_entries > 0:
            self._drop((tenant_id, space, next(iter(keys))))
        if max_entries > 0:
            self._store((tenant_id, space, key), vector, end_user, ttl_s)

    async def vectors(self, *, tenant_id: str, space: str) -> list[tuple[str, bytes]]:
        out = []
        for key in list(self._spaces.get((tenant_id, space), ())):
            item = self._live((tenant_id, space, key))
            if item is not None:
                out.append((key, item.value))
        return out

    async def purge_tenant(self, *, tenant_id: str) -> int:
        return self._purge(lambda slot, _item: slot[0] == tenant_id)

    async def purge_end_user(self, *, tenant_id: str, end_user: str) -> int:
        return self._purge(lambda slot, item: slot[0] == tenant_id and item.end_user == end_user)

    async def aclose(self) -> None:
        self._items.clear()
        self._spaces.clear()
        self.bytes = 0

    # --- internals --------------------------------------------------------------------------------------------
    def _live(self, slot: _Slot) -> _Item | None:
        item = self._items.get(slot)
        if item is not None and item.expires <= self._clock():
            self._drop(slot)
            return None
        return item

    def _store(self, slot: _Slot, value: bytes, end_user: str | None, ttl_s: float) -> None:
        if slot in self._items:
            self._drop(slot)
        size = len(value) + len(slot[2]) + len(slot[1]) + ITEM_OVERHEAD
        if size > self.max_bytes or ttl_s <= 0:
            return
        self._items[slot] = _Item(value, end_user, self._clock() + ttl_s, size)
        self.bytes += size
        if slot[1]:
            self._spaces.setdefault((slot[0], slot[1]), {})[slot[2]] = None
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    def _drop(self, slot: _Slot) -> None:
        item = self._items.pop(slot, None)
        if item is None:
            return
        self.bytes -= item.size
        if slot[1]:
            keys = self._spaces.get((slot[0], slot[1]))
            if keys is not None:
                keys.pop(slot[2], None)
                if not keys:
                    del self._spaces[(slot[0], slot[1])]

    def _purge(self, match: Callable[[_Slot, _Item], bool]) -> int:
        slots = [slot for slot, item in self._items.items() if match(slot, item)]
        for slot in slots:
            self._drop(slot)
        return sum(1 for slot in slots if not slot[1])
