"""The loyalty domain, pure: the program file, the earning rules, the account transition
``(state, event) -> (state, outputs)`` and everything it uses (stats, segments, coupons,
lots, the redemption saga's steps, output rendering, ids and codes).

Nothing here imports Kafka, Faust, RocksDB or HTTP libraries, nor any folder above it
(``streams``, ``tables``, ``agents``): only ``schemas`` and the standard library.
``tests/unit/test_layout.py`` checks both.
"""
