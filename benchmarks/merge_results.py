"""Add the data-pipeline results (benchmarks/data_pipeline.py --json) to benchmarks/results.json and RESULTS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(data_json: str = str(HERE / "data_results.json")) -> int:
    data = json.loads(Path(data_json).read_text())
    results_path = HERE / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    results = [r for r in results if r.get("name") != "data_samples_per_s_per_core"] + data
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "",
        "## Data pipeline (samples/s per core, `benchmarks/data_pipeline.py`)",
        "",
        "| config | ours | plain PIL decode+resize | ratio | target ≥ 200 | met |",
        "|---|---:|---:|---:|---|:---:|",
    ]
    if data and "date" in data[0]:  # measured by its own run, so it carries its own date and machine
        lines[3:3] = [
            f"Measured {data[0]['date']} on {data[0]['cpu']} (one process, one thread; samples per CPU-second, "
            f"best of {data[0]['rounds']} rounds; the peer in the same run).",
            "",
        ]
    for r in data:
        lines.append(
            f"| {r['config']} | {r['ours']:.0f} | {r['peer']:.0f} | {r['ratio']:.2f} | ≥ 200 | "
            f"{'yes' if r['ours'] >= 200 else 'no'} |"
        )
    report = HERE / "RESULTS.md"
    text = report.read_text() if report.exists() else ""
    marker = "\n## Data pipeline"
    text = text.split(marker)[0].rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    report.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
