"""Cost of an attempt from the catalog's prices (USD per 1M tokens).

Cached prompt tokens are billed at the prompt price: the catalog has no separate cached price yet, and charging less
than the catalog says would be a silent discount nobody configured.
"""

from __future__ import annotations

from typing import Protocol


class PricedModel(Protocol):
    """What pricing needs of a catalog entry (``settings.ModelConfig`` fits)."""

    @property
    def input_price_per_1m(self) -> float: ...

    @property
    def output_price_per_1m(self) -> float: ...


def cost_of(model: PricedModel, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for ``prompt_tokens`` at the model's input price and ``completion_tokens`` at its output price."""
    return prompt_tokens * model.input_price_per_1m / 1e6 + completion_tokens * model.output_price_per_1m / 1e6
