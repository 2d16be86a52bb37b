"""Input event contract v1: what POS terminals and member systems publish.

Values are UTF-8 JSON objects; the Kafka key is the ``member_id``. The JSON Schema files in
``schemas/json/`` describe the same contract for integrators in other languages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

SALE = "sale"
REFUND = "refund"
TRANSACTION_TYPES = (SALE, REFUND)


@dataclass(frozen=True, slots=True)
class Transaction:
    """One POS fuel transaction (topic ``loyalty.transactions``)."""

    transaction_id: str
    member_id: str
    station_id: str
    occurred_at: datetime
    """Event time, always timezone-aware."""
    fuel_type: str
    liters: Decimal
    """Exact decimal of the JSON number, so points never suffer binary rounding."""
    amount: Decimal
    type: str = SALE
    currency: str = "EUR"
    original_transaction_id: str | None = None
    coupon_codes: tuple[str, ...] = ()
