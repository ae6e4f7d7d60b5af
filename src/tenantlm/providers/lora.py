"""Per-tenant LoRA adapters on a vLLM upstream (runtime LoRA loading): which adapters this server has loaded on
each upstream, loading one (``POST /v1/load_lora_adapter {"lora_name", "lora_path"}``) before its first request
and unloading the least recently used one not in use (``POST /v1/unload_lora_adapter {"lora_name"}``) when the
upstream's ``max_loras`` are taken.

The bound is per upstream and per replica: several replicas each keep their own list, so the operator sizes the
upstream's ``--max-loras`` / ``--max-cpu-loras`` for ``max_loras`` times the replicas (or accepts that vLLM's own
LRU swaps adapters between GPU and CPU). When every loaded adapter is in use, one more is loaded over the bound
rather than failing the request. An upstream that answers 404 for a loaded adapter (it restarted) fails that
request, and the adapter is loaded again for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tenantlm.errors import NotFound, UpstreamError
from tenantlm.settings import ProviderConfig


class LoraSlots:
    """The adapters loaded on one upstream: ``lora_name -> requests using it now``, least recently used first."""

    def __init__(self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        assert config.base_url is not None
        self.config = config
        self._base = config.base_url.rstrip("/")
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loaded: OrderedDict[str, int] = OrderedDict()
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    @contextlib.asynccontextmanager
    async def using(self, lora_name: str, source: str) -> AsyncIterator[None]:
        """Hold ``lora_name`` loaded on the upstream while the request runs."""
        async with self._lock:
            if lora_name in self._loaded:
                self._loaded.move_to_end(lora_name)
            else:
                await self._make_room()
                await self._post("load_lora_adapter", {"lora_name": lora_name, "lora_path": source})
                self._loaded[lora_name] = 0
            self._loaded[lora_name] += 1
        try:
            yield
        except NotFound:
            # the upstream does not know it (restarted, or unloaded by someone else): load it again next time
            self._loaded.pop(lora_name, None)
            raise
        finally:
            if lora_name in self._loaded:
                self._loaded[lora_name] -= 1

    async def forget(self, lora_name: str) -> None:
        """Unload an adapter that was deleted (when loaded here and not in use)."""
        async with self._lock:
            if self._loaded.get(lora_name) == 0:
                del self._loaded[lora_name]
                await self._unload(lora_name)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _make_room(self) -> None:
        while len(self._loaded) >= self.config.max_loras:
            idle = next((name for name, users in self._loaded.items() if users == 0), None)
            if idle is None:
                return  # every loaded adapter is serving a request: go over the bound rather than fail
            del self._loaded[idle]
            await self._unload(idle)

    async def _unload(self, lora_name: str) -> None:
        with contextlib.suppress(UpstreamError):  # already gone upstream (a restart) is what we wanted
            await self._post("unload_lora_adapter", {"lora_name": lora_name})

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        try:
            response = await self._http().post(f"{self._base}/{path}", json=body)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"provider {self.config.name!r}: {path} failed ({type(exc).__name__})") from exc
        if response.is_success or (path == "load_lora_adapter" and b"already been loaded" in response.content):
            return
        raise UpstreamError(f"provider {self.config.name!r} refused {path} for {body['lora_name']!r} "
                            f"(HTTP {response.status_code}); is it vLLM started with --enable-lora and "
                            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {} if self.config.api_key is None else {
                "authorization": f"Bearer {self.config.api_key.get_secret_value()}"}
            timeout = httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s)
            self._client = httpx.AsyncClient(headers=headers, timeout=timeout, transport=self._transport)
        return self._client
