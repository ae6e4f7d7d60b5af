"""Stop-sequence matching over streamed text, shared by the adapters that generate text themselves.

Text arrives in pieces (one per token). A piece that might be the start of a stop sequence is held back until
the next piece decides it, so a stop sequence is never sent to the client, not even in part.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._pending = ""
        self.stopped = False

    def push(self, piece: str) -> str:
        """Add generated text; return the part that is safe to emit. Sets ``stopped`` when a stop sequence hit."""
        if self.stopped:
            return ""
        if not self._stops:
            return piece
        self._pending += piece
        cut = self._first_stop()
        if cut is not None:
            self.stopped = True
            out, self._pending = self._pending[:cut], ""
            return out
        hold = self._held_back()
        out = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(self._pending) - hold:]
        return out

    def flush(self) -> str:
        """The text still held back when generation ended without a stop sequence."""
        out, self._pending = self._pending, ""
        return "" if self.stopped else out

    def _first_stop(self) -> int | None:
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        for size in range(min(len(self._pending), self._longest - 1), 0, -1):
            tail = self._pending[-size:]
            if any(s.startswith(tail) for s in self._stops):
                return size
        return 0
