"""Parse functions for IsolatedParser's worker in tests: the file name picks a misbehaviour, anything else is
parsed for real. Module-level, so the spawned worker can import them by name."""

from __future__ import annotations

import os
import resource
import signal
import time

from tenantlm.knowledge.parsing import ParsedDocument, ParseLimits, parse_document


def misbehaving(data: bytes, *, filename: str, limits: ParseLimits) -> ParsedDocument:
    if filename.startswith("hang"):
        while True:
            time.sleep(60)
    if filename.startswith("swell"):
        hoard = bytearray(int(data))  # far past the worker's address-space cap
        return ParsedDocument(kind="txt", text=f"allocated {len(hoard)} bytes")
    if filename.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    if filename.startswith("raise"):
        raise RuntimeError(data.decode())
    if filename.startswith("confinement"):
        address_space = resource.getrlimit(resource.RLIMIT_AS)
        core = resource.getrlimit(resource.RLIMIT_CORE)
        sigint = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        return ParsedDocument(kind="txt", text=f"{address_space} {core} {sigint}")
    if filename.startswith("pid"):
        return ParsedDocument(kind="txt", text=str(os.getpid()))
    return parse_document(data, filename=filename, limits=limits)
