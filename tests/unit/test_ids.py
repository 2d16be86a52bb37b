from uuid import uuid5

import pytest

from loyalty.core.ids import _NAMESPACE, derive_id


@pytest.mark.parametrize(
    "parts",
    [
        ("transaction", "t-1", "reward"),
        ("transaction", "t-1", "ledger", "mission_bonus", "1"),
        ("daily", "daily:2026-01-01", "member-0000001", "notification", "birthday"),
        ("member_event", "é-ü-漢字", "reward"),
        ("",),
    ],
)
def test_derive_id_is_the_uuid5_of_the_joined_parts(parts):
    assert derive_id(*parts) == str(uuid5(_NAMESPACE, "/".join(parts)))


def test_derive_id_sets_the_version_and_variant_of_every_digest_like_uuid5():
    # 2,000 ids cover every value of the digest nibbles that become the variant bits.
    for n in range(2000):
        parts = ("transaction", f"bench-{n:09d}", "ledger", "fuel_points")
        assert derive_id(*parts) == str(uuid5(_NAMESPACE, "/".join(parts)))
