"""usearch, imported so that it cannot break llama.cpp in the same process.

usearch's compiled module carries its own copy of the C++ standard library and makes its symbols visible to the whole
process; a llama.cpp model loaded after that fails (``std::bad_cast`` while it reads its vocabulary: the embedded
chat model could not start in a server that had imported the vector index). Loading the system's libstdc++ with
``RTLD_GLOBAL`` first makes every library loaded later, usearch's module and llama.cpp's included, bind to that one
copy. Every import of usearch in the server goes through this module
(``tests/unit/knowledge/test_index_beside_llama.py``)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os


def _preload_libstdcxx() -> None:
    name = ctypes.util.find_library("stdc++") or "libstdc++.so.6"
    with contextlib.suppress(OSError):  # no system libstdc++ (not Linux/glibc): nothing to share
        ctypes.CDLL(name, mode=os.RTLD_GLOBAL)


_preload_libstdcxx()

from usearch.index import Index, Matches  # noqa: E402

__all__ = ["Index", "Matches"]
