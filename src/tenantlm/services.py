"""The services of one TenantLM process, built once from its settings: ``build_services(settings)`` is where every
backend is chosen (SQLite or Postgres, in-process or Redis limits, local or Vault key-encryption keys) and every
capability gets its collaborators. Nothing here does I/O; the app's lifespan (``app.py``) starts and stops them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from tenantlm.admission.memory import MemoryLimitStore
from tenantlm.admission.port import LimitStore
from tenantlm.admission.service import AdmissionService
from tenantlm.audit import AuditLog, AuditSigner, AuthFailureAggregator
from tenantlm.compliance.end_user import EndUserEraser
from tenantlm.compliance.erasure import TenantEraser
from tenantlm.compliance.export import TenantExporter
from tenantlm.compliance.rewrap import TenantRewrapper
from tenantlm.conversations.service import ConversationsService
from tenantlm.conversations.store import ConversationStore
from tenantlm.crypto import KekProvider, Keyring, LocalKekProvider, load_or_create_master_key
from tenantlm.inference.gate import Gate
from tenantlm.inference.service import InferenceService
from tenantlm.knowledge.chunking import ApproximateTokenizer, SpanTokenizer, minilm_tokenizer
from tenantlm.knowledge.embedding import Embedder
from tenantlm.knowledge.file_store import FileStore
from tenantlm.knowledge.files import FilesService
from tenantlm.knowledge.ingestion import Ingestion
from tenantlm.knowledge.parsing import IsolatedParser
from tenantlm.knowledge.search import KnowledgeSearch
from tenantlm.knowledge.vector_store_store import VectorStoreStore
from tenantlm.knowledge.vector_stores import VectorStoresService
from tenantlm.memories.service import LongTermMemory, SessionMemories
from tenantlm.memories.store import MemoryStore
from tenantlm.metering.alerts import AlertSettings, BudgetAlerts
from tenantlm.metering.ledger import Ledger
from tenantlm.metering.storage import StorageMeter, StorageUsageStore
from tenantlm.observability.auth_metrics import AuthReads
from tenantlm.observability.metrics import Metrics
from tenantlm.prompts.service import PromptsService
from tenantlm.prompts.store import PromptStore
from tenantlm.providers.registry import ProviderRegistry
from tenantlm.requestlog.service import RequestLogService
from tenantlm.requestlog.store import RequestLogStore
from tenantlm.respcache.memory import MemoryCacheBackend
from tenantlm.respcache.port import CacheBackend
from tenantlm.respcache.service import CacheConfig, ResponseCache
from tenantlm.responses.service import ResponsesService
from tenantlm.responses.store import ResponseStore
from tenantlm.scheduling.registry import RedisReplicaCount, ReplicaCount, SchedulerRegistry, StaticReplicaCount
from tenantlm.settings import Settings
from tenantlm.storage.sql.engine import Database
from tenantlm.storage.sql.router import TenantRouter
from tenantlm.tenancy.auth import Authenticator
from tenantlm.tenancy.catalog import ModelCatalog
from tenantlm.tenancy.end_users import EndUserRecorder
from tenantlm.tenancy.limits_service import LimitsService
from tenantlm.tenancy.limits_store import LimitsStore
from tenantlm.tenancy.private_catalog import PrivateCatalog, PrivateCatalogStore
from tenantlm.tenancy.private_service import PrivateCatalogService
from tenantlm.tenancy.service import TenancyService
from tenantlm.tenancy.store import TenancyStore
from tenantlm.tiers.locations import Locations
from tenantlm.tiers.service import TiersService, silo_key_prefix
from tenantlm.tiers.silos import PostgresSchemaSilos, Silos, SqliteSilos


@dataclass
class Services:
    settings: Settings
    db: Database
    router: TenantRouter  # the database of tenant content: the pool, or a tenant's silo
    tiers: TiersService
    metrics: Metrics
    auth: Authenticator
    tenancy: TenancyService
    end_users: EndUserRecorder
    catalog: ModelCatalog
    private_catalog: PrivateCatalogService
    providers: ProviderRegistry
    inference: InferenceService
    keyring: Keyring
    audit: AuditLog
    auth_failures: AuthFailureAggregator
    request_log: RequestLogService
    files: FilesService
    vector_stores: VectorStoresService
    search: KnowledgeSearch
    ingestion: Ingestion
    responses: ResponsesService
    storage: StorageMeter
    memories: LongTermMemory
    conversations: ConversationsService
    cache: ResponseCache
    prompts: PromptsService
    eraser: TenantEraser
    end_user_eraser: EndUserEraser
    rewrapper: TenantRewrapper
    exporter: TenantExporter
    limits: LimitsService
    admission: AdmissionService
    schedulers: SchedulerRegistry
    replicas: ReplicaCount
    ledger: Ledger
    alerts: BudgetAlerts | None
    redis: Any
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


def build_kek_provider(settings: Settings) -> KekProvider:
    if settings.kek_provider == "vault":
        from tenantlm.crypto.vault import VaultTransitKekProvider, vault_client

        assert settings.vault_url and settings.vault_token  # checked by Settings
        client = vault_client(settings.vault_url, settings.vault_token.get_secret_value(),
                              namespace=settings.vault_namespace)
        return VaultTransitKekProvider(client, mount_point=settings.vault_transit_mount,
                                       key_prefix=settings.vault_key_prefix)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env_key = settings.master_key.get_secret_value() if settings.master_key else None
    return LocalKekProvider(settings.keyring_path, load_or_create_master_key(settings.data_dir, env_key))


def build_limit_store(settings: Settings, router: TenantRouter) -> tuple[LimitStore, ReplicaCount, Any]:
    """In-process limits and a static replica count, or both on Redis when ``redis_url`` is set (a silo tenant's
    limiter keys under its own prefix)."""
    if settings.redis_url is None:
        return MemoryLimitStore(), StaticReplicaCount(settings.replicas), None
    from redis.asyncio import Redis

    from tenantlm.admission.redis_store import RedisLimitStore

    client = Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=2.0, socket_connect_timeout=2.0)
    store = RedisLimitStore(client, fail_open=settings.limits_fail_open, prefix_of=silo_key_prefix(router))
    return store, RedisReplicaCount(client), client


def build_silos(settings: Settings) -> Silos:
    """A file per silo tenant next to the embedded database; a schema per silo tenant on Postgres, which only the
    owner role may create (no migrate URL: existing silos are served, no tenant can move)."""
    if not settings.is_postgres:
        return SqliteSilos(settings.data_dir)
    return PostgresSchemaSilos(url=settings.sql_url, migrate_url=settings.database_migrate_url or None)


def build_cache_backend(settings: Settings, redis: Any) -> CacheBackend:
    """The response cache lives where the limits do: in process, or in the Redis the replicas share."""
    if redis is None:
        return MemoryCacheBackend(max_bytes=settings.cache_memory_bytes)
    from tenantlm.respcache.redis_store import RedisCacheBackend

    return RedisCacheBackend(redis)


def _budgets(limits: LimitsService, tenancy: TenancyService) -> Any:
    async def budgets(tenant_id: str) -> tuple[int | None, float | None]:
        eff = await limits.effective(await tenancy.get_tenant(tenant_id=tenant_id))
        return eff.tenant.monthly_token_budget, eff.tenant.monthly_cost_budget_usd
    return budgets


def _alert_hook(alerts: BudgetAlerts) -> Any:
    async def on_flushed(tenant_ids: frozenset[str]) -> None:
        await alerts.check(tenant_ids)
    return on_flushed


def build_tiers(settings: Settings, *, router: TenantRouter, locations: Locations, tenancy: TenancyService,
                audit: AuditLog, search: KnowledgeSearch, budgets: AdmissionService | None,
                ledger: Ledger) -> TiersService:
    """The tier service, which also places new tenants, and with several replicas on Postgres the placement lock
    every replica's router takes. ``budgets`` (with Redis): a move changes the tenant's key prefix there, and its
    budget counters under the new one start at the ledger's."""
    tiers = TiersService(router=router, locations=locations, tenancy=tenancy, audit=audit, caches=[search],
                         one_replica=settings.redis_url is None and settings.replicas <= 1)
    tenancy.placements = tiers
    if budgets is not None:
        async def reseed(tenant_id: str) -> None:
            await budgets.seed_budgets(await ledger.period_usage(tenant_id=tenant_id))
        tiers.after_switch.append(reseed)
    if settings.is_postgres and not tiers.one_replica:
        router.coordinate(tiers)
    return tiers


def build_services(settings: Settings) -> Services:
    db = Database.from_url(settings.sql_url)
    locations = Locations.from_settings(settings, home_pool=db, home_silos=build_silos(settings))
    router = TenantRouter(db.engine, locations=[loc.pool for loc in locations.others])
    store = TenancyStore(db)
    metrics = Metrics(max_tenants=settings.metrics_max_tenants)
    admin_key = (settings.admin_key.get_secret_value() if settings.admin_key else "") or None
    auth = Authenticator(store=store, ttl_s=settings.key_cache_ttl_s, max_entries=settings.cache_max_entries,
                         bootstrap_admin_key=admin_key, min_refresh_s=settings.key_index_refresh_s)
    metrics.registry.register(AuthReads(auth.stats))
    end_users = EndUserRecorder(store=store)
    providers = ProviderRegistry.from_settings(settings)
    keyring = Keyring(db, build_kek_provider(settings), cache_ttl_s=settings.dek_cache_ttl_s)
    audit = AuditLog(db, AuditSigner.load_or_create(settings.data_dir),
                     checkpoint_every=settings.audit_checkpoint_every,
                     checkpoint_interval_s=settings.audit_checkpoint_interval_s)
    private_store = PrivateCatalogStore(db)
    private_cache = PrivateCatalog(store=private_store, ttl_s=settings.key_cache_ttl_s,
                                   max_entries=settings.cache_max_entries)
    catalog = ModelCatalog(settings.models, created_at=int(time.time()), private=private_cache, audit=audit)
    auth_failures = AuthFailureAggregator(audit, window_s=settings.audit_auth_failure_window_s)
    request_log = RequestLogService(store=RequestLogStore(router), sealer=keyring)
    limits = LimitsService(store=LimitsStore(db), audit=audit, ttl_s=settings.key_cache_ttl_s,
                           max_entries=settings.cache_max_entries, seed_plans=settings.plans)
    tenancy = TenancyService(store=store, auth=auth, known_models=catalog.names, audit=audit, tenant_keys=keyring,
                             settings_listener=request_log, plan_exists=limits.has_plan,
                             known_regions=settings.regions, storage_region=settings.storage_region,
                             storage_regions=settings.storage_regions)
    private_catalog = PrivateCatalogService(store=private_store, cache=private_cache, catalog=catalog,
                                            settings=settings, tenants=tenancy, adapters=providers, audit=audit)
    files = FilesService(store=FileStore(router), sealer=keyring, limits=limits, audit=audit,
                         max_upload_bytes=settings.max_upload_bytes)
    limit_store, replicas, redis = build_limit_store(settings, router)
    admission = AdmissionService(limit_store)
    schedulers = SchedulerRegistry({m.name: m.max_in_flight for m in settings.models}, replicas,
                                   headrooms={m.name: m.headroom for m in settings.models if m.headroom is not None},
                                   observer_for=metrics.scheduler_observer,
                                   max_queue_per_tenant=settings.scheduler_max_queue_per_tenant,
                                   max_queue_total=settings.scheduler_max_queue_total)
    ledger = Ledger(db=db, directory=settings.data_dir / "ledger", sync=settings.ledger_sync,
                    sync_interval_s=settings.ledger_sync_interval_s)
    alerts = None
    if settings.alert_webhook_url:
        secret = settings.alert_webhook_secret.get_secret_value() if settings.alert_webhook_secret else ""
        alerts = BudgetAlerts(db=db, budgets=_budgets(limits, tenancy),
                              settings=AlertSettings(secret=secret, platform_url=settings.alert_webhook_url))
        ledger.on_flushed = _alert_hook(alerts)
    gate = Gate(settings=settings, limits=limits, admission=admission, schedulers=schedulers, ledger=ledger)
    vector_stores, search, ingestion = build_knowledge(settings, db=router, files=files, keyring=keyring, audit=audit,
                                                       catalog=catalog, providers=providers, gate=gate,
                                                       tenancy=tenancy)
    cache = ResponseCache(
        backend=build_cache_backend(settings, redis), sealer=keyring, limits=limits,
        embedder=Embedder(catalog=catalog, providers=providers, gate=gate,
                          model=settings.cache_embedding_model or settings.knowledge_embedding_model),
        config=CacheConfig(ttl_s=settings.cache_ttl_s, semantic_floor=settings.cache_semantic_floor,
                           hit_price_factor=settings.cache_hit_price_factor,
                           semantic_max_entries=settings.cache_semantic_max_entries))
    inference = InferenceService(catalog=catalog, providers=providers, metrics=metrics, end_users=end_users,
                                 request_log=request_log, gate=gate, cache=cache)
    conversations = ConversationsService(store=ConversationStore(router), sealer=keyring, tenants=tenancy)
    memories = LongTermMemory(store=MemoryStore(router), sealer=keyring, embedder=search.embedder,
                              tenant=lambda tenant_id: tenancy.get_tenant(tenant_id=tenant_id))
    prompts = PromptsService(store=PromptStore(db), sealer=keyring, audit=audit,
                             max_entries=settings.cache_max_entries)
    responses = ResponsesService(store=ResponseStore(router), sealer=keyring, inference=inference, catalog=catalog,
                                 search=search, vector_stores=vector_stores, conversations=conversations,
                                 long_term=memories, prompts=prompts)
    conversations.responses = responses
    conversations.session_hooks.append(SessionMemories(memories=memories, responses=responses))  # a session's end
    storage = StorageMeter(store=StorageUsageStore(db), sources=(files, vector_stores, responses),
                           tenants=tenancy.store, price_per_gb_day=settings.storage_price_per_gb_day)
    tiers = build_tiers(settings, router=router, locations=locations, tenancy=tenancy, audit=audit, search=search,
                        budgets=admission if redis is not None else None, ledger=ledger)
    return Services(
        router=router, tiers=tiers,
        admission=admission, schedulers=schedulers, replicas=replicas, ledger=ledger, alerts=alerts, redis=redis,
        settings=settings, db=db, metrics=metrics, auth=auth, end_users=end_users, catalog=catalog,
        private_catalog=private_catalog,
        providers=providers, tenancy=tenancy, keyring=keyring, audit=audit, auth_failures=auth_failures,
        request_log=request_log, limits=limits,
        inference=inference, responses=responses, memories=memories, conversations=conversations, cache=cache,
        prompts=prompts,
        files=files, vector_stores=vector_stores, search=search, ingestion=ingestion, storage=storage,
        eraser=TenantEraser(tenancy=tenancy, keyring=keyring,
                            contents=[tiers, conversations, responses, memories, prompts, cache, search, vector_stores,
                                      files, request_log, end_users, ledger, storage, private_catalog],
                            audit=audit, auth=auth, data_dir=settings.data_dir, metrics=metrics),
        end_user_eraser=EndUserEraser(tenancy=tenancy, audit=audit, after_erase=router.reclaim, contents={
            "conversations": conversations, "memories": memories, "responses": responses,
            "request_log": request_log, "record": end_users}, derived={"cache": cache}),
        rewrapper=TenantRewrapper(contents=[request_log, files, vector_stores, responses, memories, conversations,
                                            prompts], audit=audit),
        exporter=TenantExporter(tenancy=tenancy, request_log=request_log, audit=audit, audit_reader=audit,
                                files=files, sections=(vector_stores, responses), conversations=conversations,
                                flush=end_users.flush, memories=memories, prompts=prompts),
    )


def chunk_tokenizer() -> SpanTokenizer:
    """The embedding model's own tokenizer for chunk sizes, or an estimate when its package is not installed."""
    try:
        return minilm_tokenizer()
    except (ImportError, OSError, ValueError):
        return ApproximateTokenizer()


def build_knowledge(settings: Settings, *, db: Database, files: FilesService, keyring: Keyring, audit: AuditLog,
                    catalog: ModelCatalog, providers: ProviderRegistry, gate: Gate, tenancy: TenancyService
                    ) -> tuple[VectorStoresService, KnowledgeSearch, Ingestion]:
    """Vector stores, their search and their ingestion, wired to each other: a change to a store drops its search
    indexes, an attachment wakes the ingestion workers, a deleted file leaves every store."""
    store = VectorStoreStore(db)
    vector_stores = VectorStoresService(store=store, files=files, sealer=keyring, audit=audit)
    embedder = Embedder(catalog=catalog, providers=providers, gate=gate, model=settings.knowledge_embedding_model)
    search = KnowledgeSearch(store=store, vector_stores=vector_stores, files=files, embedder=embedder,
                             opener=keyring, index_budget_bytes=settings.knowledge_index_budget_bytes)
    ingestion = Ingestion(store=store, files=files, tenants=tenancy, embedder=embedder, parser=IsolatedParser(),
                          tokenizer=chunk_tokenizer(), sealer=keyring, on_change=search.invalidate,
                          workers=settings.ingestion_workers, lease_s=settings.ingestion_lease_s)
    vector_stores.on_change = search.invalidate
    vector_stores.wake = ingestion.wake
    files.on_delete.append(vector_stores.file_removed)
    return vector_stores, search, ingestion
