"""The composition root: ``create_app(settings)`` builds the services once (``services.build_services``, where every
backend is chosen) and puts the HTTP layers in front of them. Nothing happens at import time; start-up work
(migrations, role checks, the first admin key, model warm-up) runs in the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tenantlm import __version__
from tenantlm.api import errors as api_errors
from tenantlm.api.admin.audit_routes import router as audit_router
from tenantlm.api.admin.catalog_routes import router as catalog_router
from tenantlm.api.admin.compliance_routes import router as compliance_router
from tenantlm.api.admin.end_user_routes import router as end_user_router
from tenantlm.api.admin.limits_routes import router as limits_router
from tenantlm.api.admin.prompts_routes import router as prompts_router
from tenantlm.api.admin.routes import router as admin_router
from tenantlm.api.admin.usage_routes import router as usage_router
from tenantlm.api.docs import install_docs
from tenantlm.api.middleware import RequestContextMiddleware
from tenantlm.api.openai.chat import ChatCompletions
from tenantlm.api.openai.conversations_routes import router as conversations_router
from tenantlm.api.openai.files_routes import router as files_router
from tenantlm.api.openai.responses_routes import router as responses_router
from tenantlm.api.openai.routes import router as openai_router
from tenantlm.api.openai.vector_stores_routes import router as vector_stores_router
from tenantlm.api.responses import JSONResponse
from tenantlm.scheduling.registry import RedisReplicaCount
from tenantlm.services import Services, build_services
from tenantlm.settings import Settings
from tenantlm.storage.sql.migrate import check_app_role, migrate
from tenantlm.tenancy import access
from tenantlm.tenancy.models import PlatformPermission

log = logging.getLogger("tenantlm")
FLUSH_EVERY_S = 2.0


async def _flush_loop(svc: Services) -> None:
    while True:
        await asyncio.sleep(FLUSH_EVERY_S)
        await _flush(svc)


async def _flush(svc: Services) -> None:
    for flush in (svc.auth.flush, svc.end_users.flush, svc.request_log.flush):
        try:
            await flush()
        except Exception:
            log.warning("background flush failed; will retry", exc_info=True)


async def _sweep_loop(svc: Services) -> None:
    while True:
        await asyncio.sleep(svc.settings.retention_sweep_s)
        try:
            removed = await svc.request_log.sweep()
            if removed:
                log.info("retention sweep removed %d expired request-log entries", removed)
            removed = await svc.files.sweep()
            if removed:
                log.info("retention sweep removed %d expired files and abandoned uploads", removed)
            removed = await svc.conversations.sweep()
            if removed:
                log.info("retention sweep erased %d expired or idle conversations", removed)
        except Exception:
            log.warning("retention sweep failed; will retry", exc_info=True)


async def _storage_loop(svc: Services) -> None:
    """Sample every tenant's stored bytes into the storage ledger, at start and then every ``storage_sample_s``."""
    while True:
        try:
            sampled = await svc.storage.sample_all()
            log.debug("storage meter sampled %d tenants", sampled)
        except Exception:
            log.warning("storage sampling failed; will retry", exc_info=True)
        await asyncio.sleep(svc.settings.storage_sample_s)


async def _start_metering(svc: Services) -> None:
    """Replay the ledger's journal (events acknowledged before a crash), then seed today's and this month's usage
    into the limiter so budgets survive restarts, then start the flusher."""
    await svc.ledger.start()
    recovered = await svc.ledger.recover()
    if recovered.inserted:
        log.info("ledger: recovered %d events from the journal", recovered.inserted)
    if isinstance(svc.replicas, RedisReplicaCount):
        await svc.replicas.start()
    await _seed_budgets(svc)  # raises counters to at least the ledger's (never lowers, never double counts)
    svc.tasks.append(asyncio.create_task(svc.ledger.run_flusher(interval_s=svc.settings.ledger_flush_interval_s),
                                         name="tenantlm-ledger"))
    if svc.alerts is not None:
        await svc.alerts.resume()


async def _seed_budgets(svc: Services) -> None:
    await svc.admission.seed_budgets(await svc.ledger.platform_period_usage())


async def _warm(svc: Services) -> None:
    try:
        await svc.providers.warmup()
    except Exception:
        log.exception("model warm-up failed; models will load on first use")
    finally:
        _freeze_heap()
        svc.ready.set()


def _freeze_heap() -> None:
    """Once start-up (and model loading) is over: move every object alive now out of the garbage collector's
    generations. The long-lived heap (modules, models, SQLAlchemy, pydantic schemas) is then never traversed
    again by full collections, which otherwise stall the event loop for milliseconds under load."""
    gc.collect()
    gc.freeze()


def _announce_admin_key(token: str) -> None:
    # Printed, not logged: the secret must reach the operator once and never a log pipeline.
    line = "=" * 78
    sys.stdout.write(
        f"\n{line}\nTenantLM created a platform admin key. It is shown only this once; store it safely:\n\n"
        f"    {token}\n\nUse it as 'Authorization: Bearer <key>' on /admin/v1 or as TENANTLM_ADMIN_KEY for the CLI.\n"
        f"{line}\n\n")
    sys.stdout.flush()


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    svc: Services = app.state.services
    settings = svc.settings
    if not settings.is_postgres:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    await migrate(url=settings.sql_url, migrate_url=settings.database_migrate_url)
    await check_app_role(svc.db.engine)
    await svc.tiers.load()
    created = await svc.limits.ensure_plans()
    if created:
        log.info("created plans: %s", ", ".join(created))
    await _start_metering(svc)
    token = await svc.tenancy.ensure_admin_key()
    if token:
        _announce_admin_key(token)
    svc.tasks.append(asyncio.create_task(_flush_loop(svc), name="tenantlm-flush"))
    svc.tasks.append(asyncio.create_task(_sweep_loop(svc), name="tenantlm-retention"))
    svc.tasks.append(asyncio.create_task(_storage_loop(svc), name="tenantlm-storage-meter"))
    svc.tasks.append(asyncio.create_task(svc.ingestion.run(), name="tenantlm-ingestion"))
    svc.tasks.append(asyncio.create_task(svc.audit.background_loop(
        aggregator=svc.auth_failures, every_s=min(5.0, settings.audit_auth_failure_window_s)),
                                         name="tenantlm-audit"))
    if settings.warmup:
        svc.tasks.append(asyncio.create_task(_warm(svc), name="tenantlm-warmup"))
    else:
        _freeze_heap()
        svc.ready.set()
    log.info("tenantlm %s ready to serve (database: %s)", __version__, svc.db.engine.dialect.name)
    try:
        yield
    finally:
        for task in svc.tasks:
            task.cancel()
        await asyncio.gather(*svc.tasks, return_exceptions=True)
        await _flush(svc)
        await svc.audit.background_tick(aggregator=svc.auth_failures, force=True)
        await svc.ledger.close()
        if svc.alerts is not None:
            await svc.alerts.close()
        if isinstance(svc.replicas, RedisReplicaCount):
            await svc.replicas.aclose()
        if svc.redis is not None:
            await svc.redis.aclose()
        await svc.providers.aclose()
        await svc.search.dense.aclose()
        await asyncio.to_thread(svc.ingestion.parser.close)
        await svc.tiers.close()
        await svc.router.dispose()


async def _authorize_scrape(svc: Services, authorization: str | None) -> None:
    settings = svc.settings
    if settings.metrics_public:
        return
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    presented = (authorization or "").partition(" ")[2].strip()
    if token and presented and hmac.compare_digest(presented.encode(), token.encode()):
        return
    access.platform_only(await svc.auth.authenticate(authorization), PlatformPermission.METRICS_READ)


def _health_routes(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Any:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Any:
        svc: Services = app.state.services
        db_ok = await svc.db.ping()
        checks = {"database": "ok" if db_ok else "unreachable", "models": "ok" if svc.ready.is_set() else "warming"}
        ok = db_ok and svc.ready.is_set()
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        svc: Services = app.state.services
        await _authorize_scrape(svc, request.headers.get("authorization"))
        return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")


def create_app(settings: Settings, *, services: Services | None = None) -> TenantLMApp:
    svc = services or build_services(settings)
    app = TenantLMApp(title="TenantLM", version=__version__, lifespan=_lifespan, default_response_class=JSONResponse,
                  docs_url=None, redoc_url=None)
    app.state.services = svc
    app.state.metrics = svc.metrics
    api_errors.install(app, metrics=svc.metrics)
    app.include_router(openai_router)
    app.include_router(files_router)
    app.include_router(vector_stores_router)
    app.include_router(responses_router)
    app.include_router(conversations_router)
    app.include_router(admin_router)
    app.include_router(audit_router)
    app.include_router(compliance_router)
    app.include_router(end_user_router)
    app.include_router(limits_router)
    app.include_router(catalog_router)
    app.include_router(usage_router)
    app.include_router(prompts_router)
    _health_routes(app)
    install_docs(app)
    app.front = RequestContextMiddleware(ChatCompletions(app.framework, services=svc),
                                         metrics=svc.metrics, max_body_bytes=settings.max_body_bytes,
                                         large_bodies={("POST", "/v1/files"): settings.max_upload_bytes},
                                         access_log=settings.access_log)
    return app


class TenantLMApp(FastAPI):
    """FastAPI behind a front door of plain ASGI: every HTTP request passes the request context (request id, body
    size limit, access log, metrics), then chat completions are served by ``ChatCompletions`` (JSON and streams)
    and everything else by FastAPI. The front door sits outside FastAPI's own middleware stack (its error,
    telemetry and body-limit wrappers), which the hot path does not need: its errors go through the same renderer
    (``api.errors.error_response``), and the body limit is the request context's."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is not None and scope["type"] == "http":
            await self.front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI itself, for what the front door does not serve."""
        await super().__call__(scope, receive, send)
