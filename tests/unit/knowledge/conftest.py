"""Puts this folder on sys.path, so the helper modules (parsing_samples, parsing_hooks) import by name here and in
the parser's worker processes (which are spawned with the parent's sys.path), under any --import-mode."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
