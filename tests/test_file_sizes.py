"""Every Python file of the package and the recipes stays under 500 lines: one concern per module."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 500


def test_no_source_file_over_500_lines():
    files = sorted(p for root in ("ofa_lightning", "data_recipes") for p in (REPO / root).rglob("*.py"))
    assert len(files) > 100  # the tree was found
    over = {
        str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text(encoding="utf-8").splitlines())) > LIMIT
    }
    assert not over, f"over {LIMIT} lines (split by concern): {over}"
