"""The catalog as every worker sees it: the rewards and the units reserved from each.

:class:`CatalogView` is fed the records of two compacted topics, in offset order per
partition, by ``agents.catalog``: ``loyalty.catalog`` (a reward by ``reward_id``) and the
changelog of the ``reward_stock`` table (``schemas.state.RewardStock``, whose ``reserved``
counts the units held by redemptions). A reward's live stock is its catalog ``stock`` less
``reserved``. Both are keyed by ``reward_id``, and the latest record of a key is its value,
so applying the records in order gives the same view on every worker.

The stock is decided by the partition of ``reward_stock`` that holds the reward, not here:
this view shows it, and is a few milliseconds behind it.
"""

from __future__ import annotations

from typing import Any

from loyalty.schemas.catalog import CatalogError, Reward, decode_reward
from loyalty.schemas.state import decode_stock


class CatalogView:
    """Rewards by id and units reserved by id, from the records applied so far."""

    def __init__(self) -> None:
        self._rewards: dict[str, Reward] = {}
        self._reserved: dict[str, int] = {}
        self.skipped = 0
        """Records that could not be applied (logged by the feed): they change nothing."""
        self.ready = False
        """Set by the feed once it has read both topics up to the end offsets they had
        when it started: until then a reward may be missing or its stock stale."""

    def apply_catalog(self, key: bytes | None, value: bytes | None) -> str | None:
        """Apply one ``loyalty.catalog`` record (a tombstone removes the reward); return why
        it was skipped, or None when it was applied."""
        reward_id = self._key(key)
        if reward_id is None:
            return self._skip("catalog record without a UTF-8 reward_id key")
        if value is None:
            self._rewards.pop(reward_id, None)
            return None
        try:
            reward = decode_reward(value)
        except CatalogError as error:
            return self._skip(str(error))
        if reward.reward_id != reward_id:
            # Compaction keeps one record per key: a value under another key would outlive
            # the reward's own records, or be removed by a later record of that key.
            return self._skip(f"catalog record keyed {reward_id!r} holds {reward.reward_id!r}")
        self._rewards[reward_id] = reward
        return None

    def apply_stock(self, key: bytes | None, value: bytes | None) -> str | None:
        """Apply one record of the ``reward_stock`` changelog (a tombstone: nothing
        reserved); return why it was skipped, or None when it was applied."""
        reward_id = self._key(key)
        if reward_id is None:
            return self._skip("stock record without a UTF-8 reward_id key")
        if value is None:
            self._reserved.pop(reward_id, None)
            return None
        try:
            reserved: Any = decode_stock(value).reserved
        except (ValueError, KeyError, TypeError) as error:
            return self._skip(f"stock record of {reward_id!r} undecodable ({error!r})")
        if not isinstance(reserved, int) or isinstance(reserved, bool) or reserved < 0:
            return self._skip(f"stock record of {reward_id!r}: reserved is {reserved!r}")
        self._reserved[reward_id] = reserved
        return None

    def get(self, reward_id: str) -> Reward | None:
        """The reward as last published, or None (never published, or removed)."""
        return self._rewards.get(reward_id)

    def reserved(self, reward_id: str) -> int:
        """Units of the reward held by redemptions."""
        return self._reserved.get(reward_id, 0)

    def remaining(self, reward_id: str) -> int | None:
        """Units still available: None for unlimited stock, 0 for a reward not in the
        catalog; never below 0 (a catalog stock lowered under what is already reserved)."""
        reward = self._rewards.get(reward_id)
        if reward is None:
            return 0
        if reward.stock is None:
            return None
        return max(0, reward.stock - self.reserved(reward_id))

    def listing(self, locale: str | None = None) -> list[dict[str, Any]]:
        """Every reward (inactive ones too), by reward_id, as ``GET /catalog`` shows it:
        the name in ``locale`` (``en`` when the reward has no name in it)."""
        return [
            {
                "reward_id": reward.reward_id,
                "name": reward.display_name(locale),
                "cost_points": reward.cost_points,
                "stock": reward.stock,
                "remaining": self.remaining(reward.reward_id),
                "active": reward.active,
                "per_member_limit": reward.per_member_limit,
            }
            for reward in sorted(self._rewards.values(), key=lambda reward: reward.reward_id)
        ]

    @staticmethod
    def _key(key: bytes | None) -> str | None:
        if key is None:
            return None
        try:
            return key.decode()
        except UnicodeDecodeError:
            return None

    def _skip(self, reason: str) -> str:
        self.skipped += 1
        return reason
