"""Audit trail: an append-only, hash-chained log of admin actions and security events, Ed25519-signed checkpoints,
and a verifier that names the first bad entry. See ``service.AuditLog`` and ``verify.verify``."""

from tenantlm.audit.auth_failures import AuthFailureAggregator
from tenantlm.audit.models import AuditEntry, Checkpoint
from tenantlm.audit.service import AuditLog, validate_details
from tenantlm.audit.signer import AuditSigner, load_public_keys
from tenantlm.audit.verify import VerifyReport, run_verify_cli, verify

__all__ = ["AuditEntry", "AuditLog", "AuditSigner", "AuthFailureAggregator", "Checkpoint", "VerifyReport",
           "load_public_keys", "run_verify_cli", "validate_details", "verify"]
