"""Cost of an attempt from the catalog's prices (USD per 1M tokens).

Cached prompt tokens are billed at the prompt price: the catalog has no separate cached price yet, and charging less
than the catalog says would be a silent discount nobody configured.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class PricedModel(Protocol):
    """What pricing needs of a catalog entry (``settings.ModelConfig`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def input_price_per_1m(self) -> float: ...

    @property
    def output_price_per_1m(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Price:
    input_per_1m: float = 0.0
    output_per_1m: float = 0.0

    @classmethod
    def of(cls, model: PricedModel) -> Price:
        """The price of a resolved catalog entry (use this on the request path: it also covers tenant aliases)."""
        return cls(model.input_price_per_1m, model.output_price_per_1m)

    def cost(self, *, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_per_1m / 1e6 + completion_tokens * self.output_per_1m / 1e6


def cost_of(model: PricedModel, prompt_tokens: int, completion_tokens: int) -> float:
    """``Price.of(model).cost(...)`` without building the Price (the request path prices several times per request):
    the same operations in the same order, so the same bits."""
    return prompt_tokens * model.input_price_per_1m / 1e6 + completion_tokens * model.output_price_per_1m / 1e6


class PriceBook:
    """Prices by catalog name. An unknown model costs 0 (and is still metered in tokens), because a usage event must
    never be refused: losing the event would lose the tokens too."""

    def __init__(self, prices: dict[str, Price]) -> None:
        self._prices = dict(prices)

    @classmethod
    def from_models(cls, models: Iterable[PricedModel]) -> PriceBook:
        return cls({m.name: Price.of(m) for m in models})

    def price(self, model: str) -> Price:
        return self._prices.get(model, Price())

    def cost(self, model: str, *, prompt_tokens: int, completion_tokens: int) -> float:
        return self.price(model).cost(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
