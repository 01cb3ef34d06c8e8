"""Split names in the order people expect them (train first, then validation, then test variants)."""

from __future__ import annotations

from collections.abc import Iterable

_RANK = {
    name: i
    for i, name in enumerate(
        [
            "train",
            "restval",
            "val",
            "valid",
            "dev",
            "dev_matched",
            "dev_mismatched",
            "test",
            "testA",
            "testB",
            "testC",
            "test-dev",
            "test_matched",
            "test_mismatched",
        ]
    )
}


def order_splits(names: Iterable[str]) -> list[str]:
    """Known names in their usual order, unknown ones after them alphabetically; duplicates dropped."""
    return sorted(set(names), key=lambda n: (_RANK.get(n, len(_RANK)), n))
