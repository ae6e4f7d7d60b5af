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


class TenantTier(Body):
    tier: str = Field(description="pool (shared tables with row-level security) or silo (the tenant's own "
                                  "database).")
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


class TenantLimitsBody(SubLimitsBody):
    """A tenant's limits over its plan's; an absent field stays as it is, null is unlimited (or the default)."""

    max_queue_wait_s: float | None = None
    weight: float | None = Field(None, description="Share of the fair scheduler (2 = twice weight 1).")
    priority: int | None = None
    default_max_tokens: int | None = Field(None, description="Reserved when a request names no max_tokens.")
    max_file_bytes: int | None = Field(None, description="One uploaded file, in bytes (over it: 413).")
    storage_bytes: int | None = Field(None, description="All of the tenant's files, in bytes (over it: 429).")


class TenantLimitsPut(TenantLimitsBody):
    end_user: SubLimitsBody | None = Field(None, description="Sub-limits for each of the tenant's end users.")


class PlanPut(Body):
    description: str = ""
    limits: TenantLimitsBody = Field(default_factory=TenantLimitsBody)


class RotateRequest(Body):
    target: Literal["data_key", "key_encryption_key"] = "data_key"
    rewrap: bool = True
