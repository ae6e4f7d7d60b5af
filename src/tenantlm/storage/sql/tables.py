"""SQLAlchemy Core tables. The migrations in ``migrations/versions`` are the source of truth for the schema; these
definitions mirror them for query building, and a test checks that the two agree.

Every tenant-owned table carries ``tenant_id`` and, on Postgres, FORCE row-level security keyed on the
transaction-local setting ``tenantlm.tenant_id`` (see ``engine.TenantScopedDatabase``).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("plan", sa.String(64), nullable=False),
    sa.Column("region", sa.String(64), nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("allowed_models", sa.JSON, nullable=True),
    sa.Column("model_aliases", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("billing", sa.JSON, nullable=False, server_default="{}"),
    sa.Column("allowed_regions", sa.JSON, nullable=True),
    # migration 0017: where the tenant's content lives, "pool" (shared tables) or "silo" (its own database)
    sa.Column("tier", sa.String(8), nullable=False, server_default="pool"),
    sa.Column("reserved_share", sa.Float, nullable=True),  # a silo tenant's share of every model's capacity
    sa.Column("storage_region", sa.String(64), nullable=True),  # the location of its content; null: home
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=True),
    sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("hint", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("last_used_at", sa.Float, nullable=True),
    sa.Column("limits", sa.JSON, nullable=True),
    sa.Index("ix_api_keys_tenant", "tenant_id"),
    sa.Index("ix_api_keys_created", "created_at"),
)

admin_keys = sa.Table(
    "admin_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("hint", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("last_used_at", sa.Float, nullable=True),
    sa.Column("role", sa.String(16), nullable=False, server_default="admin"),
    sa.Index("ix_admin_keys_created", "created_at"),
)

end_users = sa.Table(
    "end_users",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.String(256), primary_key=True),
    sa.Column("first_seen_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    sa.Column("request_count", sa.BigInteger, nullable=False),
)

tenant_keys = sa.Table(
    "tenant_keys",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("wrapped_dek", sa.LargeBinary, nullable=False),
    sa.Column("kek_ref", sa.String(200), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("tenant_id", sa.String(40), nullable=True),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
    # migration 0007: every entry with a tenant also sits on that tenant's own chain
    sa.Column("format_version", sa.SmallInteger, nullable=False, server_default="1"),
    sa.Column("tenant_seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=True),
    sa.Column("tenant_prev_hash", sa.LargeBinary(32), nullable=True),
    sa.Column("tenant_hash", sa.LargeBinary(32), nullable=True),
    sa.Index("ux_audit_log_tenant_chain", "tenant_id", "tenant_seq", unique=True),
    sa.CheckConstraint(
        "(tenant_id IS NULL AND tenant_seq IS NULL AND tenant_prev_hash IS NULL AND tenant_hash IS NULL) OR "
        "(tenant_id IS NOT NULL AND tenant_seq IS NOT NULL AND tenant_prev_hash IS NOT NULL "
        "AND tenant_hash IS NOT NULL)",
        name="ck_audit_log_tenant_chain"),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
    sa.Column("signature", sa.LargeBinary(64), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
)

request_log = sa.Table(
    "request_log",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("key_id", sa.String(40), nullable=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.Column("end_user", sa.String(256), nullable=True),  # migration 0014: who the request spoke for
    sa.Index("ix_request_log_tenant_created", "tenant_id", "created_at"),
    sa.Index("ix_request_log_expires", "expires_at"),
)

plans = sa.Table(
    "plans",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.String(500), nullable=False, server_default=""),
    sa.Column("limits", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

tenant_limits = sa.Table(
    "tenant_limits",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("limits", sa.JSON, nullable=False),
    sa.Column("end_user_limits", sa.JSON, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Tables whose rows belong to one tenant. The migrations enable FORCE RLS on each; tests iterate this list.
TENANT_OWNED: dict[str, str] = {"tenants": "id", "api_keys": "tenant_id", "end_users": "tenant_id",
                                "tenant_keys": "tenant_id", "request_log": "tenant_id", "audit_log": "tenant_id",
                                "tenant_limits": "tenant_id"}
# Append-only tables: the server's role may read and insert, never update or delete.
APPEND_ONLY = ("audit_log", "audit_checkpoints")

# -- usage ledger (metering): migration 0006 --------------------------------------------------------------------------
# No foreign key to tenants: an event for a tenant deleted before the flush must still insert (a failing row would
# block the whole journal), and a bill can outlive its tenant. Erasure removes usage through the ledger instead.

usage_events = sa.Table(
    "usage_events",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("key_id", sa.String(40), nullable=True),
    sa.Column("end_user", sa.String(256), nullable=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("provider", sa.String(200), nullable=False),
    sa.Column("upstream_model", sa.String(256), nullable=False),
    sa.Column("region", sa.String(64), nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_tokens", sa.BigInteger, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("ttft_ms", sa.Float, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("http_status", sa.Integer, nullable=False),
    sa.Column("cost_nanousd", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("day", sa.String(10), nullable=False),
    sa.Column("prompt_id", sa.String(64), nullable=True),
    sa.Column("prompt_version", sa.String(16), nullable=True),
    sa.Column("prompt_override_version", sa.String(16), nullable=True),
    sa.Column("history_items", sa.Integer, nullable=True),  # migration 0019
    sa.Index("ix_usage_events_tenant_created", "tenant_id", "created_at"),
    sa.Index("ix_usage_events_created", "created_at"),
)

usage_rollups = sa.Table(
    "usage_rollups",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_nanousd", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

usage_alerts = sa.Table(
    "usage_alerts",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("metric", sa.String(8), primary_key=True),
    sa.Column("threshold", sa.Integer, primary_key=True),
    sa.Column("target", sa.String(16), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=True),
)

TENANT_OWNED.update({"usage_events": "tenant_id", "usage_rollups": "tenant_id", "usage_alerts": "tenant_id"})

files = sa.Table(
    "files",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("parts", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # "uploading" until every part is stored, then "uploaded"
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("sealed_name", sa.LargeBinary, nullable=False),
    sa.Index("ix_files_tenant_created", "tenant_id", "created_at"),
    sa.Index("ix_files_expires", "expires_at"),
)

file_parts = sa.Table(
    "file_parts",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("file_id", sa.String(64), primary_key=True),
    sa.Column("part", sa.Integer, primary_key=True),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.ForeignKeyConstraint(["tenant_id", "file_id"], ["files.tenant_id", "files.id"], ondelete="CASCADE"),
)

TENANT_OWNED.update({"files": "tenant_id", "file_parts": "tenant_id"})

vector_stores = sa.Table(
    "vector_stores",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("sealed_meta", sa.LargeBinary, nullable=False),  # name, description, metadata (sealed JSON)
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_active_at", sa.Float, nullable=False),
    sa.Column("expires_after_days", sa.Integer, nullable=True),
    sa.Index("ix_vector_stores_tenant_created", "tenant_id", "created_at"),
)

# A file attached to a store; while "in_progress" it is also the durable ingestion job of that file.
vector_store_files = sa.Table(
    "vector_store_files",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("vector_store_id", sa.String(64), primary_key=True),
    sa.Column("file_id", sa.String(64), primary_key=True),
    sa.Column("batch_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_code", sa.String(32), nullable=True),
    sa.Column("error_message", sa.String(500), nullable=True),
    sa.Column("sealed_attributes", sa.LargeBinary, nullable=True),
    sa.Column("chunking", sa.JSON, nullable=False),
    sa.Column("usage_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("lease_token", sa.String(32), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.ForeignKeyConstraint(["tenant_id", "vector_store_id"], ["vector_stores.tenant_id", "vector_stores.id"],
                            ondelete="CASCADE"),
    sa.Index("ix_vector_store_files_work", "status", "lease_until"),
)

vector_store_file_batches = sa.Table(
    "vector_store_file_batches",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("vector_store_id", sa.String(64), nullable=False),
    sa.Column("cancelled", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.ForeignKeyConstraint(["tenant_id", "vector_store_id"], ["vector_stores.tenant_id", "vector_stores.id"],
                            ondelete="CASCADE"),
)

chunks = sa.Table(
    "chunks",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(40), nullable=False),
    sa.Column("vector_store_id", sa.String(64), nullable=False),
    sa.Column("file_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("sealed_text", sa.LargeBinary, nullable=False),
    sa.Column("sealed_vector", sa.LargeBinary, nullable=False),  # float32 little-endian, sealed
    sa.ForeignKeyConstraint(["tenant_id", "vector_store_id", "file_id"],
                            ["vector_store_files.tenant_id", "vector_store_files.vector_store_id",
                             "vector_store_files.file_id"], ondelete="CASCADE"),
    sa.Index("ix_chunks_store", "tenant_id", "vector_store_id"),
    sa.Index("ix_chunks_file", "tenant_id", "vector_store_id", "file_id"),
)

TENANT_OWNED.update({"vector_stores": "tenant_id", "vector_store_files": "tenant_id",
                     "vector_store_file_batches": "tenant_id", "chunks": "tenant_id"})

# A stored response: its own new input items and its output (both sealed JSON), and the response it continues. The
# conversation is the chain of previous_response_id pointers (no FK: deleting a response leaves the later ones).
responses = sa.Table(
    "responses",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("previous_response_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sealed_input", sa.LargeBinary, nullable=False),
    sa.Column("sealed_output", sa.LargeBinary, nullable=False),
    sa.Column("end_user", sa.String(256), nullable=True),  # migration 0014: whose turn it was (end-user erasure)
    sa.Column("conversation_id", sa.String(64), nullable=True),  # migration 0012: erased with its conversation
    sa.Index("ix_responses_end_user", "tenant_id", "end_user"),
    sa.Index("ix_responses_conversation", "tenant_id", "conversation_id"),
)

TENANT_OWNED.update({"responses": "tenant_id"})

# -- long-term memories per end user: migration 0014 -------------------------------------------------------------
# One fact about one end user of one tenant: its text and its embedding sealed with the tenant's data key (record id
# "<end user>/<memory id>"), where it came from (a response id, or "admin"), when.
memories = sa.Table(
    "memories",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("end_user", sa.String(256), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("sealed_text", sa.LargeBinary, nullable=False),
    sa.Column("sealed_vector", sa.LargeBinary, nullable=True),  # float32 little-endian, sealed; null: no embedder
)

TENANT_OWNED.update({"memories": "tenant_id"})

# Storage metering (migration 0018): the most bytes a tenant kept of each kind of content on each UTC day, sampled
# by the storage meter; a bill is the sum over days of the day's peak (byte-days). No foreign key, like the ledger:
# a bill can outlive its tenant's content.
storage_usage = sa.Table(
    "storage_usage",
    metadata,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD, UTC
    sa.Column("kind", sa.String(32), primary_key=True),  # files, vector_stores, responses, ...
    sa.Column("peak_bytes", sa.BigInteger, nullable=False),
    sa.Column("sampled_at", sa.Float, nullable=False),
)

TENANT_OWNED.update({"storage_usage": "tenant_id"})

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("end_user", sa.String(256), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_active_at", sa.Float, nullable=False),
    sa.Column("next_position", sa.Integer, nullable=False),
    sa.Column("sealed_metadata", sa.LargeBinary, nullable=False),
    sa.Column("sealed_summary", sa.LargeBinary, nullable=True),
    sa.Column("summary_through", sa.Integer, nullable=False),
    sa.Index("ix_conversations_end_user", "tenant_id", "end_user"),
)

conversation_items = sa.Table(
    "conversation_items",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("conversation_id", sa.String(64), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sealed_item", sa.LargeBinary, nullable=False),
    sa.Index("ix_conversation_items_position", "tenant_id", "conversation_id", "position", unique=True),
)

TENANT_OWNED.update({"conversations": "tenant_id", "conversation_items": "tenant_id"})

# A tenant's private catalog entries: a dedicated deployment only that tenant sees (``tenant_models``), and its LoRA
# adapters on a base model's vLLM upstream (``tenant_adapters``; ``lora_name`` is the name the upstream knows it by,
# unique per tenant and per creation).
tenant_models = sa.Table(
    "tenant_models",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("provider", sa.String(100), nullable=False),
    sa.Column("upstream_model", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("region", sa.String(64), nullable=False),
    sa.Column("input_price_per_1m", sa.Float, nullable=False, server_default="0"),
    sa.Column("output_price_per_1m", sa.Float, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
)

tenant_adapters = sa.Table(
    "tenant_adapters",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("base_model", sa.String(100), nullable=False),
    sa.Column("source", sa.String(1000), nullable=False),
    sa.Column("lora_name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

TENANT_OWNED.update({"tenant_models": "tenant_id", "tenant_adapters": "tenant_id"})

# Prompt templates: the platform's base prompts (immutable numbered versions, movable labels) and tenant overrides
# (their own versions and labels; the content sealed with the tenant's data key).
prompts = sa.Table(
    "prompts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

prompt_versions = sa.Table(
    "prompt_versions",
    metadata,
    sa.Column("prompt_id", sa.String(64), sa.ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("template", sa.JSON, nullable=False),
    sa.Column("variables", sa.JSON, nullable=False),
    sa.Column("model", sa.JSON, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

prompt_labels = sa.Table(
    "prompt_labels",
    metadata,
    sa.Column("prompt_id", sa.String(64), sa.ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("label", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

prompt_overrides = sa.Table(
    "prompt_overrides",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("prompt_id", sa.String(64), sa.ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
)

prompt_override_labels = sa.Table(
    "prompt_override_labels",
    metadata,
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("prompt_id", sa.String(64), sa.ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("label", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

TENANT_OWNED.update({"prompt_overrides": "tenant_id", "prompt_override_labels": "tenant_id"})
