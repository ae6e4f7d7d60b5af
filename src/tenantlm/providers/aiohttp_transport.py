"""An ``httpx`` transport that sends requests through an ``aiohttp`` connection pool.

Why: measured on the proxied chat path (``bench/p1_gateways.py``, 16 connections), httpcore's pool spent more than
half of the gateway's CPU choosing a connection — every request checks every pooled connection for expiry with a
``select()`` and several anyio attribute lookups. aiohttp's connector keeps idle connections in a per-host deque and
checks only the one it takes. The provider keeps speaking httpx (requests, responses, ``MockTransport`` in tests);
only the wire under it changes, so retries, streaming, timeouts and error mapping stay where they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TimeoutError as exc:  # aiohttp's socket read timeout is a TimeoutError (and a ClientError)
            raise httpx.ReadTimeout(str(exc)) from exc
        except aiohttp.ClientPayloadError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx.ReadError(str(exc)) from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Pooled like ``httpx.AsyncHTTPTransport`` (``max_connections`` per transport, keep-alive); timeouts come
    from each request's httpx timeout extension, so the client's ``httpx.Timeout`` still applies."""

    def __init__(self, *, max_connections: int = 256) -> None:
        self._max = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # created lazily: it needs the running loop
            connector = aiohttp.TCPConnector(limit=self._max, limit_per_host=self._max, ttl_dns_cache=300,
                                             enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = _timeout(request.extensions.get("timeout"))
        try:
            response = await self._get().request(
                request.method, str(request.url), headers=list(request.headers.multi_items()),
                data=request.content, timeout=timeout, allow_redirects=False)
        except aiohttp.ServerTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc), request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx.NetworkError(str(exc), request=request) from exc
        return httpx.Response(response.status, headers=list(response.raw_headers), stream=_Body(response),
                              request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _timeout(value: Any) -> aiohttp.ClientTimeout:
    if not isinstance(value, dict):
        return aiohttp.ClientTimeout(total=None)
    return aiohttp.ClientTimeout(total=None, connect=value.get("connect"), sock_read=value.get("read"))
