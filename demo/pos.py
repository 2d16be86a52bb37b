"""A POS simulator: fuel transactions and redemption requests as stations would publish
them."""

from __future__ import annotations

import random
from datetime import datetime

FUEL_TYPES = ("diesel", "gasoline95", "gasoline98", "lpg")
PRICE_PER_LITER = {"diesel": 1.52, "gasoline95": 1.64, "gasoline98": 1.79, "lpg": 0.95}


class PosSimulator:
    """Endless, reproducible transactions for a pool of members and stations."""

    def __init__(self, members: int = 50, stations: int = 12, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.members = [f"member-{index:05d}" for index in range(members)]
        self.stations = [f"station-{index:03d}" for index in range(stations)]
        self.sequence = 0
        self.run_id = f"{seed:x}{self.rng.getrandbits(32):08x}"

    def transaction(self, occurred_at: datetime) -> dict[str, object]:
        self.sequence += 1
        fuel = self.rng.choice(FUEL_TYPES)
        liters = round(self.rng.uniform(5, 65), 2)
        return {
            "transaction_id": f"pos-{self.run_id}-{self.sequence:08d}",
            "member_id": self.rng.choice(self.members),
            "station_id": self.rng.choice(self.stations),
            "occurred_at": occurred_at.isoformat(timespec="milliseconds"),
            "type": "sale",
            "fuel_type": fuel,
            "liters": liters,
            "amount": round(liters * PRICE_PER_LITER[fuel], 2),
            "currency": "EUR",
        }

    def redemption(self, occurred_at: datetime, reward_ids: list[str]) -> dict[str, object]:
        """A member asking a station for one catalog reward."""
        self.sequence += 1
        return {
            "request_id": f"rdm-{self.run_id}-{self.sequence:08d}",
            "member_id": self.rng.choice(self.members),
            "reward_id": self.rng.choice(reward_ids),
            "quantity": 1,
            "station_id": self.rng.choice(self.stations),
            "occurred_at": occurred_at.isoformat(timespec="milliseconds"),
        }
