"""The vector index and the embedded chat model live in one process: after the index's library is imported, the
llama.cpp model still loads and answers (it failed with std::bad_cast before the index imported usearch through
``knowledge/index/_usearch.py``). Run in a fresh interpreter, so nothing loaded earlier by the suite can hide it."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import tenantlm.knowledge.index.local  # imports usearch
from llama_cpp import Llama
from tenantlm.providers.local_chat import default_model_path
llm = Llama(model_path=default_model_path(), n_ctx=256, verbose=False)
print(len(llm.tokenize(b"hello world")))
"""


@pytest.mark.local_models
def test_the_chat_model_loads_after_the_vector_index() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 0
