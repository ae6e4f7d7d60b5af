"""A BERT encoder forward pass in plain torch, reading Hugging Face ``BertModel`` weights (safetensors).

Enough for sentence-embedding models such as all-MiniLM-L6-v2: absolute position embeddings, post-layer-norm
blocks, exact (erf) GELU, no pooler. Inference only; call it under ``torch.inference_mode()``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


@dataclass(frozen=True, slots=True)
class BertConfig:
    hidden_size: int
    num_heads: int
    num_layers: int
    layer_norm_eps: float
    max_positions: int

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        raw: dict[str, Any] = json.loads(path.read_text())
        if raw.get("hidden_act", "gelu") != "gelu" or raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only BERT with gelu and absolute positions is supported")
        return cls(
            hidden_size=int(raw["hidden_size"]),
            num_heads=int(raw["num_attention_heads"]),
            num_layers=int(raw["num_hidden_layers"]),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            max_positions=int(raw.get("max_position_embeddings", 512)),
        )


class BertEncoder:
    """``encode(input_ids, attention_mask) -> last hidden states [batch, length, hidden]``."""

    def __init__(self, weights: dict[str, torch.Tensor], config: BertConfig) -> None:
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
        self._w = {name[len(prefix):]: tensor.float() for name, tensor in weights.items() if name.startswith(prefix)}
        self.config = config
        missing = [n for n in self._required() if n not in self._w]
        if missing:
            raise ValueError(f"BERT weights are missing {missing[:3]}")

    @classmethod
    def from_dir(cls, model_dir: Path) -> BertEncoder:
        return cls(load_file(str(model_dir / "model.safetensors")), BertConfig.from_file(model_dir / "config.json"))

    def _required(self) -> list[str]:
        names = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                 "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight"]
        return names + [f"encoder.layer.{i}.output.dense.weight" for i in range(self.config.num_layers)]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self._embed(input_ids)
        keep = attention_mask.bool()[:, None, None, :]  # [batch, 1, 1, length]: True where a key may be attended
        for i in range(self.config.num_layers):
            x = self._layer(x, keep, f"encoder.layer.{i}.")
        return x

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        w = self._w
        positions = torch.arange(input_ids.shape[1])
        x = (w["embeddings.word_embeddings.weight"][input_ids]
             + w["embeddings.position_embeddings.weight"][positions][None, :, :]
             + w["embeddings.token_type_embeddings.weight"][0][None, None, :])
        return self._norm(x, "embeddings.LayerNorm.")

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (self.config.hidden_size,), self._w[name + "weight"], self._w[name + "bias"],
                            self.config.layer_norm_eps)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self._w[name + "weight"], self._w[name + "bias"])

    def _layer(self, x: torch.Tensor, keep: torch.Tensor, p: str) -> torch.Tensor:
        x = self._norm(x + self._linear(self._attention(x, keep, p), p + "attention.output.dense."),
                       p + "attention.output.LayerNorm.")
        hidden = F.gelu(self._linear(x, p + "intermediate.dense."))
        return self._norm(x + self._linear(hidden, p + "output.dense."), p + "output.LayerNorm.")

    def _attention(self, x: torch.Tensor, keep: torch.Tensor, p: str) -> torch.Tensor:
        batch, length, hidden = x.shape
        heads = self.config.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, heads, hidden // heads).transpose(1, 2)

        q = split(self._linear(x, p + "attention.self.query."))
        k = split(self._linear(x, p + "attention.self.key."))
        v = split(self._linear(x, p + "attention.self.value."))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return out.transpose(1, 2).reshape(batch, length, hidden)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where the mask is 1, then L2-normalised (sentence-transformers' recipe)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1)
