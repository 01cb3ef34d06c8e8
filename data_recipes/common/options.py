"""Options every shard-writing recipe accepts (the recipe adds its own inputs)."""

from __future__ import annotations

import argparse
import re

from data_recipes.common.checks import DEFAULT_MAX_TEXT_CHARS

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """'500M', '1G', '123456' -> bytes (binary multiples)."""
    match = _SIZE.match(str(text))
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 500M or 1G)")
    value = int(float(match.group(1)) * _FACTORS[match.group(2).lower()])
    if value <= 0:
        raise argparse.ArgumentTypeError("size must be positive")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output (common to all recipes)")
    group.add_argument("--out", required=True, help="output folder for shards, manifest.json and sizes.json")
    group.add_argument(
        "--splits", default=None, help="comma-separated splits to write (default: every split the inputs provide)"
    )
    group.add_argument(
        "--max-samples", type=positive_int, default=None, help="write at most N samples per split (for quick subsets)"
    )
    group.add_argument("--shard-size", type=positive_int, default=5000, help="samples per shard (default 5000)")
    group.add_argument(
        "--shard-bytes",
        type=parse_bytes,
        default=parse_bytes("1G"),
        help="start a new shard once one reaches this size, e.g. 500M (default 1G)",
    )
    group.add_argument(
        "--shuffle",
        action="store_true",
        help="shuffle sample order within each split (seeded by --seed) before sharding",
    )
    group.add_argument("--seed", type=int, default=0, help="seed for --shuffle (default 0)")
    group.add_argument(
        "--max-text-chars",
        type=positive_int,
        default=DEFAULT_MAX_TEXT_CHARS,
        help=f"longer texts are skipped (default {DEFAULT_MAX_TEXT_CHARS})",
    )
    group.add_argument(
        "--full-decode",
        action="store_true",
        help="fully decode every image when checking it (slower; default: header + verify)",
    )
    group.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad sample, naming file and sample, instead of skipping it",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="delete this recipe's shards and manifest in --out and rebuild from scratch",
    )
    group.add_argument(
        "--verify", action="store_true", help="on a re-run, check sha256 of existing shards (default: size only)"
    )
    group.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
