"""``benchmarks/suites/soak.py`` on a very short run (20 steps, RSS at steps 5 and 20): it trains the demo configuration
with 2 loader workers, samples RSS, writes soak.json + the RESULTS.md paragraph. The real 1,000-step soak is a
benchmark (``.venv/bin/python benchmarks/suites/soak.py --append-results``), not a test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "suites"))

import soak  # noqa: E402


@pytest.mark.slow  # ~50 s: builds shards, trains a tokenizer, starts 2 loader workers
@pytest.mark.usefixtures("one_thread")
def test_short_soak_writes_json_and_paragraph(tmp_path):
    args = soak.parse_args(
        [
            "--steps",
            "20",
            "--at",
            "5",
            "20",
            "--every",
            "0",
            "--num-images",
            "40",
            "--root",
            str(tmp_path / "root"),
            "--out",
            str(tmp_path / "out"),
            "data.micro_batch_size=4",
            "data.task_options.image_size=64",
            "model.encoder_layers=1",
            "model.decoder_layers=1",
            "tokenizer.max_samples=200",
        ]
    )
    result = soak.run(args)
    saved = json.loads((tmp_path / "out" / "soak.json").read_text())
    assert saved["ratio"] == result["ratio"] and saved["workers"] == 2 and saved["steps"] == 20
    assert [s["step"] for s in saved["samples"]] == [5, 20]
    assert all(s["rss_with_children_mb"] > s["rss_mb"] > 50 for s in saved["samples"])  # the 2 workers are counted
    assert saved["ratio"] == pytest.approx(saved["rss_last_mb"] / saved["rss_first_mb"], rel=1e-3)
    assert saved["passed"] == (saved["ratio"] <= 1.10)
    paragraph = (tmp_path / "out" / "soak.md").read_text()
    assert paragraph.startswith(soak.SECTION) and "20 CPU steps with 2 loader workers" in paragraph


def test_append_results_replaces_the_previous_soak_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Bench\n\ntext\n\n## Other\n\nkeep\n")
    soak.append_results(f"{soak.SECTION}\n\nfirst\n", results)
    soak.append_results(f"{soak.SECTION}\n\nsecond\n", results)
    text = results.read_text()
    assert text.count(soak.SECTION) == 1 and "second" in text and "first" not in text and "keep" in text
    with pytest.raises(SystemExit):
        soak.parse_args(["--steps", "10", "--at", "5", "20"])
