"""TenantLM: a self-hosted, multi-tenant AI platform server."""

__version__ = "0.1.0"
