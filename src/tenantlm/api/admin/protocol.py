"""Wire schemas of the admin API's request bodies: they give every body its shape in the OpenAPI description and
refuse the wrong shape (unknown fields, wrong JSON types) with OpenAI's 400 naming the field (``param``).

Types are strict: ``"5"`` is not a number and ``1`` is not a boolean. What a value may be beyond its JSON type (a
name's characters, a plan that exists, a limit's range) is checked once, by the service that owns the rule
(``tenancy.service``, ``tenancy.limits``); the routes pass ``model_dump(exclude_unset=True)`` on, so a field left out
stays "unchanged" and an explicit ``null`` stays "clear it".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tenantlm.tenancy.models import Permission, PlatformRole, Role

Status = Literal["active", "suspended"]
_LAX = Field(strict=False)  # enums arrive as JSON strings
_REGIONS = ("Regions whose model deployments may serve the tenant (region: on models/providers); null: any. "
            "Platform keys only.")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, as plain JSON values."""
        return self.model_dump(mode="json", exclude_unset=True)


class Billing(Body):
    stripe_customer_id: str | None = Field(None, description="The tenant's Stripe customer (Stripe usage export).")


class TenantCreate(Body):
    name: str = Field(description="Unique; 1-200 letters, digits, space, '.', '_' or '-'.")
    status: Status = "active"
    plan: str = Field("free", description="A plan name (GET /admin/v1/plans).")
    region: str = "local"
    metadata: dict[str, Any] = Field(default_factory=dict, description="The tenant's own key-value data.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Known settings, e.g. request_log_days.")
    allowed_models: list[str] | None = Field(None, description="Catalog models the tenant may use; null: all.")
    model_aliases: dict[str, str] = Field(default_factory=dict, description="Alias name -> catalog model name.")
    billing: Billing = Field(default_factory=Billing, description="Platform-only billing identifiers.")
    allowed_regions: list[str] | None = Field(None, description=_REGIONS)


class TenantUpdate(Body):
    """Every field optional. A tenant's own admin may change name, metadata and settings only."""

    name: str | None = None
    status: Status | None = None
    plan: str | None = None
    region: str | None = None
    metadata: dict[str, Any] | None = None
    settings: dict[str, Any | None] | None = Field(None, description="Merged key by key; null removes a setting.")
    allowed_models: list[str] | None = None
    model_aliases: dict[str, str] | None = None
    billing: Billing | None = Field(None, description="Merged key by key; null removes an identifier.")
    allowed_regions: list[str] | None = Field(None, description=_REGIONS)


class TenantTier(Body):
    tier: str | None = Field(None, description="pool (shared tables with row-level security) or silo (the tenant's "
                                               "own database); null: keep the tenant's tier.")
    storage_region: str | None = Field(None, description="Move the tenant's content to the storage location of this "
                                                         "region; null: keep it where it is.")
    reserved_share: float | None = Field(None, description="silo only: the share of every model's capacity "
                                                           "kept for the tenant (0 < share <= 0.9); null: none.")


class TenantDelete(Body):
    confirm: str | bool = Field(description="The tenant's id (or true): deleting shreds its keys, irreversibly.")


class KeyCreate(Body):
    name: str = "key"
    role: Annotated[Role, _LAX] = Role.MEMBER
    scopes: list[Annotated[Permission, _LAX]] | None = Field(None, description="Narrow the role to these.")
    expires_at: float | None = Field(None, description="Unix time; or give expires_in_s.")
    expires_in_s: float | None = None


class PlatformKeyCreate(Body):
    name: str
    role: Annotated[PlatformRole, _LAX] = Field(
        description="admin: everything; auditor: read-only, audit and usage included, no tenant content; "
                    "billing: usage and its exports.")


class SubLimitsBody(Body):
    """Limits inside the tenant's (per key or per end user); null is unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    daily_token_budget: int | None = None
    monthly_token_budget: int | None = None
    monthly_cost_budget_usd: float | None = None


class CacheBody(Body):
    """The response cache's switches (docs/operations.md); an absent field follows the plan (else off)."""

    exact: bool | None = None
    semantic: bool | None = None
    semantic_threshold: float | None = Field(None, description="Cosine similarity for a semantic hit, 0.5-1.")
    personal: bool | None = Field(None, description="Answers are kept per end user.")


class TenantLimitsBody(SubLimitsBody):
    """A tenant's limits over its plan's; an absent field stays as it is, null is unlimited (or the default)."""

    max_queue_wait_s: float | None = None
    weight: float | None = Field(None, description="Share of the fair scheduler (2 = twice weight 1).")
    priority: int | None = None
    default_max_tokens: int | None = Field(None, description="Reserved when a request names no max_tokens.")
    max_file_bytes: int | None = Field(None, description="One uploaded file, in bytes (over it: 413).")
    storage_bytes: int | None = Field(None, description="All of the tenant's files, in bytes (over it: 429).")
    cache: CacheBody | None = Field(None, description="The response cache's default for the plan's tenants.")


class TenantLimitsPut(TenantLimitsBody):
    end_user: SubLimitsBody | None = Field(None, description="Sub-limits for each of the tenant's end users.")


class PlanPut(Body):
    description: str = ""
    limits: TenantLimitsBody = Field(default_factory=TenantLimitsBody)


class RotateRequest(Body):
    target: Literal["data_key", "key_encryption_key"] = "data_key"
    rewrap: bool = True


class MemoryCreate(Body):
    text: str = Field(description="The fact to remember about the end user (at most 2,000 characters).")
    source: str | None = Field(None, max_length=64, description="Where it came from (default: admin).")


class MemorySearch(Body):
    query: str = Field(description="What to look for among the end user's memories.")
    k: int = Field(5, ge=1, le=50, description="How many memories to return, best first.")


class TenantModelCreate(Body):
    """A private catalog entry: a deployment only this tenant sees."""

    name: str = Field(description="The model name the tenant sends; 1-100 letters, digits, '.', '_', ':' or '-'.")
    provider: str = Field(description="A configured provider (the YAML's providers).")
    upstream_model: str = Field(description="The model name the provider serves it under.")
    kind: Literal["chat", "embedding"] = "chat"
    region: str | None = Field(None, description="Where it runs; default the provider's region.")
    input_price_per_1m: float | None = Field(None, description="Dollars per million prompt tokens (default 0).")
    output_price_per_1m: float | None = Field(None, description="Dollars per million completion tokens (default 0).")


class AdapterCreate(Body):
    """A LoRA adapter of this tenant on a base model served by a vLLM upstream."""

    name: str = Field(description="The model name the tenant sends; 1-100 letters, digits, '.', '_', ':' or '-'.")
    base_model: str = Field(description="A chat model the tenant may use (catalog or private) on a vLLM upstream.")
    source: str = Field(description="Where the upstream loads it from (lora_path): a path on the upstream's host "
                                    "or a Hugging Face repository id.")
