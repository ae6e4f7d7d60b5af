"""LoRA adapter files for the embedded chat model (SmolLM2), written with the ``gguf`` package the way llama.cpp's
``convert_lora_to_gguf.py`` writes them: ``general.type`` adapter, ``adapter.type`` lora, ``adapter.lora.alpha``,
and rank-r ``blk.N.<weight>.lora_a`` (ggml shape [n_in, r]) / ``.lora_b`` ([r, n_out]) tensors per block."""

from __future__ import annotations

import functools
from pathlib import Path

import gguf
import numpy as np

from tenantlm.providers.local_chat import default_model_path

PARTS = ("attn_q", "attn_v")


@functools.cache
def base_shapes() -> tuple[str, dict[str, tuple[int, int]]]:
    """The base model's architecture and the ggml shape (n_in, n_out) of each weight the adapters touch."""
    reader = gguf.GGUFReader(default_model_path())
    arch = str(reader.fields["general.architecture"].contents())
    shapes = {t.name: (int(t.shape[0]), int(t.shape[1])) for t in reader.tensors
              if t.name.endswith(tuple(f"{part}.weight" for part in PARTS))}
    return arch, shapes


def write_lora(path: Path, *, seed: int, std: float = 0.15, rank: int = 4, arch: str | None = None,
               n_in_shift: int = 0, general_type: str = "adapter") -> Path:
    """A random LoRA for every block's attn_q and attn_v, strong enough to change greedy output. ``arch``,
    ``n_in_shift`` and ``general_type`` make broken ones (another architecture, wrong shapes, not an adapter)."""
    base_arch, shapes = base_shapes()
    writer = gguf.GGUFWriter(str(path), arch=arch or base_arch)
    writer.add_type(general_type)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    rng = np.random.default_rng(seed)
    for name, (n_in, n_out) in sorted(shapes.items()):
        writer.add_tensor(f"{name}.lora_a", rng.normal(0, std, (rank, n_in + n_in_shift)).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", rng.normal(0, std, (n_out, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def bad_files(folder: Path) -> dict[str, Path]:
    """Files that are not a LoRA adapter for the embedded model, by what is wrong with them."""
    text = folder / "notes.txt"
    text.write_text("not a model at all\n")
    damaged = folder / "damaged.gguf"
    damaged.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    return {
        "missing": folder / "no-such-adapter.gguf",
        "not gguf": text,
        "damaged header": damaged,
        "a full model": Path(default_model_path()),
        "another architecture": write_lora(folder / "qwen2.gguf", seed=5, arch="qwen2"),
        "wrong shapes": write_lora(folder / "shapes.gguf", seed=6, n_in_shift=-64),
        "not an adapter type": write_lora(folder / "imatrix.gguf", seed=7, general_type="imatrix"),
    }
