"""Typed settings: ``TENANTLM_*`` environment variables plus an optional YAML file for models and providers.

Precedence: explicit keyword arguments > environment > YAML file > defaults. Secrets are ``SecretStr`` so they never
print. Nothing here does work at import time; ``load_settings`` is called by the CLI and by tests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_CHAT_MODEL = "smollm2-135m-instruct"
LOCAL_EMBEDDING_MODEL = "all-minilm-l6-v2"


class ProviderConfig(BaseModel):
    """One backend. ``type`` picks the adapter; the other fields are read by that adapter only."""

    model_config = {"extra": "forbid"}

    name: str
    type: Literal["openai_compatible", "local", "fake"]
    # Where this provider runs (an operator-defined region name). Its models take it unless they name their own.
    region: str | None = None
    # openai_compatible
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    max_retries: int = 2
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    max_connections: int = 256
    # The HTTP client: "native" (providers/h1.py: HTTP/1.1 keep-alive, the fastest measured here) or "httpx" (the
    # one to pick for proxies or HTTP/2). Any other value is refused at start-up, naming these two.
    http_pool: Literal["native", "httpx"] = "native"
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0
    # Per-tenant LoRA adapters (a vLLM upstream started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING):
    # adapters this server keeps loaded on the upstream at once; the least recently used one not in use is unloaded
    # to make room. Match the upstream's --max-loras (or --max-cpu-loras when it is larger). On a `local` provider:
    # GGUF adapters kept loaded on each model instance.
    max_loras: int = Field(default=8, ge=1)
    # local
    threads: int = 1
    instances: int = 1
    context_length: int = 2048
    model_path: str | None = None
    # fake
    latency_ms: float = 0.0
    token_latency_ms: float = 0.0
    tokens: int = 16
    embedding_dimensions: int = 8

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if self.type == "openai_compatible" and not self.base_url:
            raise ValueError(f"provider {self.name!r}: openai_compatible needs base_url")
        return self


class ModelConfig(BaseModel):
    """A catalog entry: the name tenants use, where it is served, what it costs."""

    model_config = {"extra": "forbid"}

    name: str
    provider: str
    upstream_model: str | None = None
    kind: Literal["chat", "embedding"] = "chat"
    region: str = "local"
    input_price_per_1m: float = 0.0
    output_price_per_1m: float = 0.0
    context_length: int = 2048
    dimensions: int | None = None
    fallbacks: list[str] = Field(default_factory=list)
    # Requests in flight to this model across all replicas; beyond it requests queue in weighted-fair order.
    max_in_flight: int = Field(default=64, ge=1)
    # Of those, slots held back for newcomers while a flood is queued, so a light tenant starts at once instead of
    # waiting for a running request to end (its throughput cost: headroom / max_in_flight while a flood runs).
    # Unset (None): each replica holds back tenantlm.scheduling.default_headroom of its share of max_in_flight.
    # 0 makes the scheduler work-conserving.
    headroom: int | None = Field(default=None, ge=0)
    # The model's tokenizer (a Hugging Face tokenizer.json): prompts are counted with it for admission and for
    # billing an attempt the upstream reported no usage for. Unset: four bytes of text a token (tenantlm.tokens).
    tokenizer: str | None = None
    # A LoRA adapter served by the provider (vLLM runtime LoRA): ``upstream_model`` is its lora_name, loaded from
    # this path or URL on first use. Set on tenants' adapters (``tenancy.private_catalog``).
    lora_source: str | None = None

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"tokenizer file {value!r} does not exist")
        return value

    @model_validator(mode="after")
    def _headroom_below_capacity(self) -> ModelConfig:
        if self.headroom is not None and self.headroom >= self.max_in_flight:
            raise ValueError(f"model {self.name!r}: headroom ({self.headroom}) must be less than max_in_flight "
                             f"({self.max_in_flight})")
        return self

    @property
    def upstream(self) -> str:
        return self.upstream_model or self.name

    @property
    def is_adapter(self) -> bool:
        return self.lora_source is not None


class StorageLocation(BaseModel):
    """A database that keeps the content of the tenants whose data must stay in ``region`` (besides the home
    database, ``database_url``, whose region is ``storage_region``). SQLite: a file path URL; its silos go in
    ``<that file's directory>/tenants/``. Postgres: the server's role, and the owner role that migrates it and creates
    silo schemas there."""

    model_config = {"extra": "forbid"}

    region: str = Field(min_length=1, max_length=64)
    database_url: str
    database_migrate_url: str | None = None


def default_providers() -> list[ProviderConfig]:
    return [ProviderConfig(name="local", type="local")]


def default_models() -> list[ModelConfig]:
    return [
        ModelConfig(name=LOCAL_CHAT_MODEL, provider="local", kind="chat", context_length=2048),
        ModelConfig(name=LOCAL_EMBEDDING_MODEL, provider="local", kind="embedding", dimensions=384,
                    context_length=256),
    ]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANTLM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    config_file: Path | None = None
    database_url: str | None = None
    # The region where this deployment keeps tenant data (database, files, vector indexes, request log, usage
    # journal). When set, it is a configured region and a tenant's allowed_regions must include it. Unset: untagged.
    storage_region: str | None = None
    # More storage locations, one per region (YAML `storage_locations:` or TENANTLM_STORAGE_LOCATIONS as JSON): a
    # tenant's content lives in the location of its storage region (docs/operations.md, Storage locations).
    storage_locations: list[StorageLocation] = Field(default_factory=list)
    # Postgres only: the owner role that runs migrations. The server itself connects with database_url, which must
    # be a role that neither owns the tables nor bypasses row-level security.
    database_migrate_url: str | None = None
    admin_key: SecretStr | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    # The body of one file upload (POST /v1/files), whatever a tenant's plan allows (OpenAI's limit is 512 MB).
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    # Knowledge (files, vector stores): the catalog model that embeds chunks and queries, as the tenant; the memory
    # all loaded vector indexes may take together (least recently searched stores are dropped past it); background
    # ingestion workers per replica.
    knowledge_embedding_model: str = "all-minilm-l6-v2"
    knowledge_index_budget_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    ingestion_workers: int = Field(default=2, ge=0, le=64)
    # How long a worker holds a file it ingests (renewed while it works); a worker that dies leaves the file to
    # another one after this long.
    ingestion_lease_s: float = Field(default=120.0, ge=1.0, le=3600.0)
    key_cache_ttl_s: float = 1.0
    # Entries at most in each in-memory cache (resolved keys, effective limits): memory stays bounded whatever
    # clients send.
    cache_max_entries: int = Field(default=100_000, ge=100)
    # A key id this replica has not seen triggers a refresh of the known ids at most this often (a key made on
    # another replica is usable here after at most this long; made-up keys cost at most one read per interval).
    key_index_refresh_s: float = Field(default=0.1, gt=0, le=60)
    metrics_max_tenants: int = 100
    # /metrics names tenants and their traffic: it needs a platform admin key or this scrape token, unless public.
    metrics_token: SecretStr | None = None
    metrics_public: bool = False
    log_level: str = "INFO"
    log_json: bool = True
    access_log: bool = True
    # Tenant content encryption. The master key seals the local provider's per-tenant KEK files; it comes from
    # TENANTLM_MASTER_KEY (32 bytes, base64 or hex) or from <data_dir>/master.key, created at first start (0600).
    master_key: SecretStr | None = None
    kek_provider: Literal["local", "vault"] = "local"
    # Where the local provider keeps per-tenant KEK files; default <data_dir>/keyring. Keep it OUT of database
    # backups: a backup that holds both cannot be crypto-shredded.
    keyring_dir: Path | None = None
    dek_cache_ttl_s: float = Field(default=300.0, gt=0)
    vault_url: str | None = None
    vault_token: SecretStr | None = None
    vault_namespace: str | None = None
    vault_transit_mount: str = "transit"
    vault_key_prefix: str = "tenantlm-"
    # Audit trail: a signed checkpoint every N entries or T seconds, whichever comes first.
    audit_checkpoint_every: int = Field(default=100, ge=1)
    audit_checkpoint_interval_s: float = Field(default=60.0, gt=0)
    # Failed authentications are counted and written as one aggregated audit entry per window.
    audit_auth_failure_window_s: float = Field(default=60.0, gt=0)
    # How often expired request-log entries are deleted.
    retention_sweep_s: float = Field(default=60.0, gt=0)
    # Storage metering: how often every tenant's stored bytes are sampled into the daily storage ledger (the bill's
    # resolution), and the price of a GB-day (10^9 bytes kept for a day; 0: storage is reported, not charged).
    storage_sample_s: float = Field(default=3600.0, gt=0)
    storage_price_per_gb_day: float = Field(default=0.0, ge=0)
    # Plans created at first start when absent (name -> {"description", "limits"}); default: free, pro, enterprise.
    plans: dict[str, dict[str, Any]] | None = None
    # Shared state for several replicas (limits, scheduler share). Unset: in-process, exact for one process.
    redis_url: SecretStr | None = None
    # Redis unreachable: refuse requests (503, the default) or let them through unlimited.
    limits_fail_open: bool = False
    # Replicas sharing each model's max_in_flight when there is no Redis to count them.
    replicas: int = Field(default=1, ge=1)
    scheduler_max_queue_per_tenant: int = Field(default=256, ge=0)
    scheduler_max_queue_total: int = Field(default=4096, ge=0)
    # Response cache (off for every tenant until its plan or its settings turn it on; docs/operations.md): how long
    # an entry lives; the embedded backend's byte budget (entries and vectors of all tenants; with redis_url the
    # cache lives in Redis); the lowest semantic similarity any tenant or request may use; what a hit costs as a
    # share of the catalog price of the tokens it carries (0: hits are free); semantic entries per tenant and
    # request shape; the embedding model of the semantic cache (default: knowledge_embedding_model).
    cache_ttl_s: float = Field(default=3600.0, gt=0, le=30 * 86_400)
    cache_memory_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    cache_semantic_floor: float = Field(default=0.9, ge=0.5, le=1.0)
    cache_hit_price_factor: float = Field(default=0.0, ge=0.0, le=1.0)
    cache_semantic_max_entries: int = Field(default=1000, ge=0, le=100_000)
    cache_embedding_model: str | None = None
    # Budget alerts: signed webhooks at 50/80/100% of a tenant's monthly budget.
    alert_webhook_url: str | None = None
    alert_webhook_secret: SecretStr | None = None
    ledger_flush_interval_s: float = Field(default=1.0, gt=0)
    # When a usage event is acknowledged: "always" once written and fsynced (DESIGN invariant 4: durable before
    # acknowledged, power cuts included; group commit shares an fsync among concurrent requests), "interval" once
    # written to the local journal (survives kill -9 and any process crash; fsynced every ledger_sync_interval_s,
    # so a power cut or kernel crash can lose that much: served and never billed, never billed twice).
    ledger_sync: Literal["always", "interval"] = "always"
    ledger_sync_interval_s: float = Field(default=0.05, gt=0, le=10)
    # Load the local models at start (readiness waits for it) instead of on the first request.
    warmup: bool = True
    providers: list[ProviderConfig] = Field(default_factory=default_providers)
    models: list[ModelConfig] = Field(default_factory=default_models)

    @field_validator("data_dir", mode="after")
    @classmethod
    def _abs(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("admin_key", mode="after")
    @classmethod
    def _strong_admin_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and 0 < len(v.get_secret_value()) < 16:
            raise ValueError("TENANTLM_ADMIN_KEY must be at least 16 characters")
        return v

    @model_validator(mode="after")
    def _check_vault(self) -> Settings:
        if self.kek_provider == "vault" and not (self.vault_url and self.vault_token):
            raise ValueError("kek_provider 'vault' needs TENANTLM_VAULT_URL and TENANTLM_VAULT_TOKEN")
        return self

    @model_validator(mode="after")
    def _check_catalog(self) -> Settings:
        names = {p.name for p in self.providers}
        if len(names) != len(self.providers):
            raise ValueError("provider names must be unique")
        seen: set[str] = set()
        for m in self.models:
            if m.provider not in names:
                raise ValueError(f"model {m.name!r} names unknown provider {m.provider!r}")
            provider_region = self.provider(m.provider).region
            if "region" not in m.model_fields_set and provider_region is not None:
                m.region = provider_region  # a model runs where its provider does unless it says otherwise
            if m.name in seen:
                raise ValueError(f"model {m.name!r} is declared twice")
            seen.add(m.name)
        for m in self.models:
            for fb in m.fallbacks:
                if fb not in seen:
                    raise ValueError(f"model {m.name!r} falls back to unknown model {fb!r}")
        return self

    @model_validator(mode="after")
    def _check_storage_locations(self) -> Settings:
        if not self.storage_locations:
            return self
        if not self.storage_region:
            raise ValueError("storage_locations need TENANTLM_STORAGE_REGION: the region of the home database")
        regions = [loc.region for loc in self.storage_locations]
        if self.storage_region in regions or len(set(regions)) != len(regions):
            raise ValueError("each storage location needs a region of its own, other than storage_region")
        return self

    @property
    def storage_regions(self) -> list[str]:
        """Where tenant data may be kept: the home database's region first, then each storage location's."""
        home = [self.storage_region] if self.storage_region else []
        return home + [loc.region for loc in self.storage_locations]

    @property
    def sql_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'tenantlm.db'}"

    @property
    def keyring_path(self) -> Path:
        return (self.keyring_dir or self.data_dir / "keyring").expanduser().resolve()

    @property
    def is_postgres(self) -> bool:
        return self.sql_url.startswith("postgresql")

    def model(self, name: str) -> ModelConfig | None:
        for m in self.models:
            if m.name == name:
                return m
        return None

    def regions(self) -> set[str]:
        """The regions the operator named: on models, providers and storage ("local" where nothing says otherwise)."""
        named = {m.region for m in self.models} | {p.region for p in self.providers if p.region is not None}
        return named | set(self.storage_regions)

    def provider(self, name: str) -> ProviderConfig:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings from YAML (models, providers and any other field), then env, then ``overrides``."""
    path = config_file or os.environ.get("TENANTLM_CONFIG_FILE")
    file_values: dict[str, Any] = {}
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ValueError(f"config file not found: {p}")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {p} must hold a mapping at the top level")
        file_values = loaded
        file_values["config_file"] = p
    env_set = {k[len("TENANTLM_"):].lower() for k in os.environ if k.startswith("TENANTLM_")}
    merged = {k: v for k, v in file_values.items() if k not in env_set}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**merged)
