"""Audit trail: an append-only log of admin actions and security events on two kinds of hash chain (the platform's,
with Ed25519-signed checkpoints, and one per tenant), and a verifier that names the first bad entry. See
``service.AuditLog``, ``chain`` and ``verify``."""

from tenantlm.audit.auth_failures import AuthFailureAggregator
from tenantlm.audit.models import AuditEntry, Checkpoint, TenantAuditEntry
from tenantlm.audit.service import AuditLog, validate_details
from tenantlm.audit.signer import AuditSigner, load_public_keys
from tenantlm.audit.verify import VerifyReport, verify, verify_tenant, verify_tenant_export
from tenantlm.audit.verify_cli import run_verify_cli, run_verify_export_cli

__all__ = ["AuditEntry", "AuditLog", "AuditSigner", "AuthFailureAggregator", "Checkpoint", "TenantAuditEntry",
           "VerifyReport", "load_public_keys", "run_verify_cli", "run_verify_export_cli", "validate_details", "verify",
           "verify_tenant", "verify_tenant_export"]
