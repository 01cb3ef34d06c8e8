"""``benchmarks/suites/faults.py`` on a short run: one SIGKILL cycle (the final weights, optimiser moments and EMA
equal an uninterrupted run's) and one cycle of each other fault in order (checkpoint corruption, shard damage, a
full disk), each accounted for. The figures of a longer run are in docs/reliability.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "suites"))

import faults  # noqa: E402


@pytest.mark.slow  # ~1.5 min on 2 cores: 8 launches of ofa-train
def test_fault_cycles_lose_nothing(tmp_path):
    result = faults.main(
        [
            "--kill-cycles",
            "1",
            "--mixed-cycles",
            "4",
            "--faults",
            "kill,checkpoint,shard,disk_full",
            "--in-order",
            "--steps",
            "12",
            "--num-images",
            "24",
            "--root",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert result["kill"]["equal"], result["kill"]
    injected = {r["fault"] for r in result["mixed"]["cycles"] if r.get("cycle") != "final"}
    assert injected == {"kill", "checkpoint", "shard", "disk_full"}
    assert all(result["verdict"].values()), result["verdict"]
    assert (tmp_path / "out" / "faults.md").read_text().startswith("| run | cycles |")
