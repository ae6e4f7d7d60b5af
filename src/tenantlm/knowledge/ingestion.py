"""Ingestion: the background work that turns an attached file into searchable chunks, from a durable queue.

The queue is the ``vector_store_files`` table itself: a file ``in_progress`` is a job. A worker claims one with a
lease (a random token and a deadline, renewed while it works); reads and decrypts the file; parses it in an isolated
worker process (``parsing``); chunks it with the file's strategy; embeds the chunks as the tenant (``embedding``:
admitted, scheduled fairly, metered); and stores the sealed chunks and marks the file ``completed`` in ONE
transaction that first deletes any chunks of the same file. So a worker killed at any point (kill -9 included)
leaves either nothing or the whole file; the job's lease runs out and another worker redoes it; nothing is lost and
nothing is counted twice. A job whose token no longer matches (cancelled, detached, taken over) commits nothing.

Workers take tenants in turn (one job of each tenant with work, then the next), so a tenant that attaches ten
thousand files does not hold another's one file behind them. A file that cannot be read fails with
``unsupported_file`` / ``invalid_file``; a transient failure (rate limit, upstream down) is retried with backoff,
and after ``MAX_ATTEMPTS`` fails with ``server_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tenantlm.errors import InvalidRequest, NotFound, PermissionDenied, TenantLMError
from tenantlm.knowledge.chunking import ChunkingStrategy, SpanTokenizer, chunk_text
from tenantlm.knowledge.embedding import Embedder, ingestion_context
from tenantlm.knowledge.files import FilesService
from tenantlm.knowledge.parsing import IsolatedParser, ParseError, ParseLimits
from tenantlm.knowledge.vector_store_store import Claim, NewChunk, VectorStoreStore, chunk_record
from tenantlm.tenancy.models import Tenant

log = logging.getLogger("tenantlm.ingestion")
MAX_ATTEMPTS = 8
IDLE_POLL_S = 2.0  # how often an idle worker looks for work attached through another replica


class Sealer(Protocol):
    async def seal(self, *, tenant_id: str, kind: str, record_id: str, plaintext: bytes) -> bytes: ...


class Tenants(Protocol):
    async def get_tenant(self, *, tenant_id: str) -> Tenant: ...


@dataclass
class IngestionStats:
    completed: int = 0
    failed: int = 0
    retried: int = 0


class Ingestion:
    def __init__(self, *, store: VectorStoreStore, files: FilesService, tenants: Tenants, embedder: Embedder,
                 parser: IsolatedParser, tokenizer: SpanTokenizer, sealer: Sealer,
                 on_change: Callable[[str, str], None], workers: int = 2, lease_s: float = 120.0,
                 parse_timeout_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.files = files
        self.tenants = tenants
        self.embedder = embedder
        self.parser = parser
        self.tokenizer = tokenizer
        self.sealer = sealer
        self.on_change = on_change
        self.workers = workers
        self.lease_s = lease_s
        self.parse_timeout_s = parse_timeout_s
        self.clock = clock
        self.stats = IngestionStats()
        self._wake = asyncio.Event()
        self._served: list[str] = []  # tenants served, most recent last (the turn order)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """``workers`` loops until cancelled."""
        await asyncio.gather(*(self._loop() for _ in range(self.workers)))

    async def _loop(self) -> None:
        while True:
            try:
                worked = await self.run_once()
            except Exception:
                log.warning("ingestion step failed; will retry", exc_info=True)
                worked = False
            if not worked:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)

    async def run_once(self) -> bool:
        """Claim and process one job; False when there was none."""
        claim = await self._claim()
        if claim is None:
            return False
        await self._process(claim)
        return True

    async def _claim(self) -> Claim | None:
        now = self.clock()
        pending = await self.store.platform_pending_tenants(now=now)
        for tenant_id in sorted(pending, key=self._turn):
            claim = await self.store.claim(tenant_id=tenant_id, now=now, lease_s=self.lease_s,
                                           token=secrets.token_hex(16))
            if claim is not None:
                if tenant_id in self._served:
                    self._served.remove(tenant_id)
                self._served.append(tenant_id)
                return claim
        return None

    def _turn(self, tenant_id: str) -> int:
        """Tenants never served come first, then the one served longest ago."""
        return self._served.index(tenant_id) + 1 if tenant_id in self._served else 0

    async def _process(self, claim: Claim) -> None:
        renew = asyncio.create_task(self._keep_lease(claim))
        try:
            await self._ingest(claim)
        except ParseError as exc:
            await self._fail(claim, exc.code or "invalid_file", exc.message)
        except NotFound as exc:
            if exc.code == "model_not_found":
                await self._fail(claim, "server_error", "The embedding model is not available to this tenant; "
                                 "ask the operator to allow it.")
            else:
                await self._fail(claim, "invalid_file", "The file was deleted before it could be processed.")
        except (InvalidRequest, PermissionDenied) as exc:  # retrying cannot help
            await self._fail(claim, "server_error", exc.message)
        except (TenantLMError, OSError) as exc:  # rate limits, budgets, an upstream down: later
            await self._retry(claim, exc)
        except Exception as exc:  # a fault of ours (the database, say): logged, retried, and in the end failed
            log.warning("ingestion of a file failed; will retry", exc_info=True)
            await self._retry(claim, exc)
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew

    async def _keep_lease(self, claim: Claim) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await self.store.renew(claim=claim, until=self.clock() + self.lease_s)

    async def _ingest(self, claim: Claim) -> None:
        tenant = await self.tenants.get_tenant(tenant_id=claim.tenant_id)
        stored, data = await self.files.read_all(tenant_id=claim.tenant_id, file_id=claim.file_id)
        parsed = await self.parser.parse_async(data, filename=stored.filename, limits=ParseLimits(),
                                               timeout_s=self.parse_timeout_s)
        del data
        strategy = ChunkingStrategy.parse(claim.chunking)
        pieces = chunk_text(parsed.text, strategy, self.tokenizer)
        vectors = await self.embedder.embed(ctx=ingestion_context(tenant), texts=[p.text for p in pieces])
        new_chunks = await self._sealed(claim, [p.text for p in pieces], [p.tokens for p in pieces], vectors)
        usage = sum(len(p.text.encode()) for p in pieces) + int(vectors.nbytes)
        if await self.store.complete(claim=claim, new_chunks=new_chunks, usage_bytes=usage):
            self.stats.completed += 1
            self.on_change(claim.tenant_id, claim.vector_store_id)

    async def _sealed(self, claim: Claim, texts: list[str], tokens: list[int], vectors: np.ndarray
                      ) -> list[NewChunk]:
        out = []
        for seq, (text, count) in enumerate(zip(texts, tokens, strict=True)):
            record = chunk_record(claim.vector_store_id, claim.file_id, seq)
            sealed_text = await self.sealer.seal(tenant_id=claim.tenant_id, kind="chunk_text", record_id=record,
                                                 plaintext=text.encode())
            sealed_vector = await self.sealer.seal(tenant_id=claim.tenant_id, kind="chunk_vector",
                                                   record_id=record, plaintext=vectors[seq].astype("<f4").tobytes())
            out.append(NewChunk(seq=seq, tokens=count, sealed_text=sealed_text, sealed_vector=sealed_vector))
        return out

    async def _fail(self, claim: Claim, code: str, message: str) -> None:
        if await self.store.fail(claim=claim, code=code, message=message):
            self.stats.failed += 1

    async def _retry(self, claim: Claim, exc: Exception) -> None:
        if claim.attempts >= MAX_ATTEMPTS:
            await self._fail(claim, "server_error", "The file could not be processed; attach it again to retry.")
            log.warning("ingestion gave up on a file after %d attempts: %s", claim.attempts, type(exc).__name__)
            return
        wait = getattr(exc, "retry_after", None) or min(300.0, 2.0 ** claim.attempts)
        await self.store.release(claim=claim, retry_at=self.clock() + float(wait))
        self.stats.retried += 1
