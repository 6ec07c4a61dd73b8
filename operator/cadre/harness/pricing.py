"""What a model call costs: a price table per model (US dollars per million tokens), which an
Agent's ``spec.pricing`` overrides. Cache reads default to a tenth of the input price and cache
writes to 1.25 times it, as Anthropic prices them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from cadre.api.agent import Pricing

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Prices:
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal

    @classmethod
    def of(cls, input_price: str, output_price: str) -> Prices:
        base = Decimal(input_price)
        return cls(base, Decimal(output_price), base / 10, base * Decimal("1.25"))


# List prices per million tokens, by model name prefix (longest prefix wins).
DEFAULT_PRICES: dict[str, Prices] = {
    "claude-opus-4": Prices.of("15", "75"),
    "claude-sonnet-4": Prices.of("3", "15"),
    "claude-3-7-sonnet": Prices.of("3", "15"),
    "claude-haiku-4": Prices.of("1", "5"),
    "claude-3-5-haiku": Prices.of("0.80", "4"),
}
UNKNOWN = Prices(Decimal(0), Decimal(0), Decimal(0), Decimal(0))


def prices_for(model: str, override: Pricing | None = None) -> Prices:
    """The Agent's own prices if set, else the table's for the model (zero if unknown)."""
    if override is not None:
        base = Decimal(override.input)
        return Prices(
            base,
            Decimal(override.output),
            Decimal(override.cache_read) if override.cache_read is not None else base / 10,
            Decimal(override.cache_write)
            if override.cache_write is not None
            else base * Decimal("1.25"),
        )
    matches = [prefix for prefix in DEFAULT_PRICES if model.startswith(prefix)]
    return DEFAULT_PRICES[max(matches, key=len)] if matches else UNKNOWN


def cost(prices: Prices, usage: dict[str, int]) -> Decimal:
    return (
        prices.input * usage.get("input_tokens", 0)
        + prices.output * usage.get("output_tokens", 0)
        + prices.cache_read * usage.get("cache_read_input_tokens", 0)
        + prices.cache_write * usage.get("cache_creation_input_tokens", 0)
    ) / MILLION
