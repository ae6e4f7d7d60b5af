"""Per-tenant LoRA adapters on the embedded llama.cpp model: checking an adapter file, and the adapters loaded on
one model instance.

An adapter is a GGUF LoRA file (``general.type`` "adapter", ``adapter.type`` "lora", ``general.architecture`` the
base model's, tensors ``blk.N.<weight>.lora_a`` / ``.lora_b`` that fit the base model's weights), as llama.cpp's
``convert_lora_to_gguf.py`` writes from a PEFT adapter. :func:`read_adapter_header` reads the header with the GGUF
reader of the ggml library that llama.cpp itself uses; llama.cpp's loader then checks the tensors.

:class:`InstanceAdapters` belongs to one model instance (``LlamaEngine``): adapters are loaded with
``llama_adapter_lora_init`` on that instance's model when a request first needs them, kept least recently used
first, at most ``max_loras`` of them, and freed (``llama_adapter_lora_free``) when evicted or forgotten. A request
sets its adapter (or none) on the instance's context before it evaluates its prompt and clears it before the
instance goes back to the pool, so the adapter of one request is never on the context for another. An adapter is
freed only while no request runs on the instance (a deletion during one is done when it ends).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pathlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tenantlm.errors import InvalidRequest, ServiceUnavailable, UpstreamError

GGUF_MAGIC = b"GGUF"
GGUF_TYPE_STRING = 8
HEADER_KEYS = ("general.type", "adapter.type", "general.architecture")
CONVERT_HINT = "convert a PEFT adapter with llama.cpp's convert_lora_to_gguf.py"


@dataclass(frozen=True, slots=True)
class LoraFile:
    """An adapter as a request names it: the name it is loaded under (unique per tenant and creation) and its file."""

    name: str
    path: str


class _GgufInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


@functools.cache
def _gguf() -> Any:
    """ggml's GGUF reader (``gguf_init_from_file`` and friends), from the library llama-cpp-python ships."""
    import llama_cpp
    from llama_cpp._ctypes_extensions import load_shared_library

    lib = load_shared_library("ggml-base", pathlib.Path(llama_cpp.__file__).parent / "lib")
    signatures: dict[str, tuple[list[Any], Any]] = {
        "gguf_init_from_file": ([ctypes.c_char_p, _GgufInitParams], ctypes.c_void_p),
        "gguf_find_key": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_int64),
        "gguf_get_kv_type": ([ctypes.c_void_p, ctypes.c_int64], ctypes.c_int),
        "gguf_get_val_str": ([ctypes.c_void_p, ctypes.c_int64], ctypes.c_char_p),
        "gguf_free": ([ctypes.c_void_p], None),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    return lib


def _header_strings(path: str) -> dict[str, str | None] | None:
    """The string values of ``HEADER_KEYS`` in a GGUF file (None where absent); None when it is not readable GGUF."""
    lib = _gguf()
    ctx = lib.gguf_init_from_file(os.fsencode(path), _GgufInitParams(True, None))
    if not ctx:
        return None
    try:
        values: dict[str, str | None] = {}
        for key in HEADER_KEYS:
            index = lib.gguf_find_key(ctx, key.encode())
            is_text = index >= 0 and lib.gguf_get_kv_type(ctx, index) == GGUF_TYPE_STRING
            values[key] = lib.gguf_get_val_str(ctx, index).decode("utf-8", "replace") if is_text else None
        return values
    finally:
        lib.gguf_free(ctx)


def _refuse(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="source")


def read_adapter_header(path: str) -> str:
    """Check that ``path`` is a readable GGUF LoRA adapter; return the architecture it was made for."""
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise _refuse(f"source {path!r} is not a file this server can read")
    with open(path, "rb") as file:
        magic = file.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise _refuse(f"source {path!r} is not a GGUF file; {CONVERT_HINT}")
    try:
        header = _header_strings(path)
    except (ImportError, OSError, AttributeError) as exc:
        raise ServiceUnavailable("the local model runtime (llama-cpp-python) is not installed or not usable; "
                                 "adapter files cannot be checked") from exc
    if header is None:
        raise _refuse(f"source {path!r} is not a readable GGUF file (its header is damaged)")
    if header["general.type"] != "adapter":
        raise _refuse(f"source {path!r} is a GGUF {header['general.type'] or 'model'!r} file, not a LoRA adapter "
                      f"(general.type must be 'adapter'); {CONVERT_HINT}")
    if header["adapter.type"] != "lora":
        raise _refuse(f"source {path!r} is a {header['adapter.type']!r} adapter; only 'lora' adapters are served")
    if not header["general.architecture"]:
        raise _refuse(f"source {path!r} does not name the architecture it was made for (general.architecture)")
    return header["general.architecture"]


def _api() -> Any:
    import llama_cpp

    return llama_cpp


class InstanceAdapters:
    """The adapters loaded on one model instance: ``name -> llama_adapter_lora``, least recently used first.

    :meth:`applied` runs in the instance's worker thread; :meth:`forget` and :meth:`probe` in any thread.
    """

    def __init__(self, llm: Any, *, max_loras: int) -> None:
        self._llm = llm
        self.architecture = str(llm.metadata.get("general.architecture", ""))
        self._max = max(1, max_loras)
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._retired: set[str] = set()
        self._busy = False
        self._on_context = False  # an adapter is set on the context (only ever during a run)
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    @contextlib.contextmanager
    def applied(self, lora: LoraFile | None) -> Iterator[None]:
        """Run one request with ``lora`` (None: no adapter) on the context; clear the context after it."""
        with self._lock:
            if self._on_context:  # clearing failed after the previous request: nothing runs until it succeeds
                self._set_on_context([])
            adapter = None if lora is None else self._acquire(lora)
            self._busy = True
        try:
            if adapter is not None:
                self._set_on_context([adapter])
            yield
        finally:
            try:
                if self._on_context:
                    self._set_on_context([])
            finally:
                with self._lock:
                    self._busy = False
                    if not self._on_context:  # never free what the context may still point at
                        for name in self._retired:
                            self._free(name)
                        self._retired.clear()

    def forget(self, name: str) -> None:
        """Free a deleted adapter now, or when the request running on the instance ends."""
        with self._lock:
            if name not in self._loaded:
                return
            if self._busy or self._on_context:
                self._retired.add(name)
            else:
                self._free(name)

    def probe(self, path: str) -> bool:
        """Whether llama.cpp loads ``path`` as an adapter of this model (freed again at once)."""
        with self._lock:
            adapter = _api().llama_adapter_lora_init(self._llm._model.model, os.fsencode(path))
            if not adapter:
                return False
            _api().llama_adapter_lora_free(adapter)
            return True

    def _set_on_context(self, adapters: list[Any]) -> None:
        llama_cpp = _api()
        n = len(adapters)
        array = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*adapters) if n else None
        scales = (ctypes.c_float * n)(*([1.0] * n)) if n else None
        self._on_context = True
        if llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, array, n, scales) != 0:
            raise UpstreamError("the local model could not set a LoRA adapter on its context")
        self._on_context = n > 0

    def _acquire(self, lora: LoraFile) -> Any:
        """The loaded adapter (loaded now when it is not), made the most recently used. Holds the lock."""
        if lora.name in self._loaded:
            self._loaded.move_to_end(lora.name)
            return self._loaded[lora.name]
        while len(self._loaded) >= self._max:  # nothing is in use: this instance runs one request at a time
            self._free(next(iter(self._loaded)))
        adapter = _api().llama_adapter_lora_init(self._llm._model.model, os.fsencode(lora.path))
        if not adapter:
            raise UpstreamError("the local model could not load this adapter's file (moved or changed since the "
                                "adapter was created?)")
        self._loaded[lora.name] = adapter
        return adapter

    def _free(self, name: str) -> None:
        adapter = self._loaded.pop(name, None)
        if adapter is not None:
            _api().llama_adapter_lora_free(adapter)
