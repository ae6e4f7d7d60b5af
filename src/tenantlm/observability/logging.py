"""JSON logs that carry the request id and tenant id of the request being served, and never a secret.

The ids travel in context variables set by the request middleware. A last-line filter masks anything shaped like a
TenantLM key or a bearer token, in case a message ever quotes one.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
tenant_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant_id", default=None)

_SECRET = re.compile(r"(tlm(?:admin)?_[A-Za-z0-9]{8})[A-Za-z0-9]+|((?i:bearer)\s+)\S+")
_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
            "request_id": request_id_var.get(),
            "tenant_id": tenant_id_var.get(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                doc[k] = redact(v) if isinstance(v, str) else v
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(doc, default=str).decode()


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        rid, tid = request_id_var.get(), tenant_id_var.get()
        ctx = f" [{rid or '-'} {tid or '-'}]" if rid or tid else ""
        out = f"{stamp} {record.levelname:<7} {record.name}{ctx}: {redact(record.getMessage())}"
        if record.exc_info:
            out += "\n" + redact(self.formatException(record.exc_info))
        return out


def configure_logging(*, level: str = "INFO", json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
