"""Loaded by the gateways that ``bench/instructions.py`` counts (it puts this directory first on PYTHONPATH).

Switches off what runs on a timer instead of per request, for the count only: under valgrind a request takes ~20x
longer, so once-a-second work would be charged to ~20x fewer requests than in real use and would swamp the
per-request figure. Settings cover the ledger flush, the key cache, the audit checkpoint and the retention sweep
(see the bench's environment); this covers the rest: the background flush loop (key last-use, end users, request
log), the limits cache's refresh, and the journal's fdatasync, which becomes a no-op. The fsync's time is not an
instruction count anyway, and on a slow disk the journal would switch from its inline path to its thread path part
way through a run, which would make runs disagree. Nothing here is imported by the product itself.
"""

from __future__ import annotations

import os
from typing import Any

if os.environ.get("TENANTLM_BENCH_INSTRUCTIONS") == "1":
    from tenantlm import app as _app
    from tenantlm.metering import journal as _journal
    from tenantlm.tenancy import limits_service as _limits_service

    _app.FLUSH_EVERY_S = 3600.0

    _limits_init = _limits_service.LimitsService.__init__

    def _limits_without_refresh(self: Any, *args: Any, **kwargs: Any) -> None:
        _limits_init(self, *args, **kwargs)
        self.ttl_s = 3600.0

    _limits_service.LimitsService.__init__ = _limits_without_refresh  # type: ignore[method-assign]

    _journal_init = _journal.Journal.__init__

    def _journal_without_fsync(self: Any, *args: Any, **kwargs: Any) -> None:
        _journal_init(self, *args, **kwargs)
        self.fsync = lambda fd: None

    _journal.Journal.__init__ = _journal_without_fsync  # type: ignore[method-assign]
