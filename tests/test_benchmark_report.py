"""``benchmarks/harness/report.py``: docs/benchmarks.md is generated from the suites' results, one table with the
date, the machine and the port's figures beside ours; sections whose results are missing are left out."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_report():
    spec = importlib.util.spec_from_file_location("ofa_bench_report", REPO / "benchmarks" / "harness" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entry(name, config, ours, peer, ratio, target="none", met=None):
    return dict(name=name, config=config, ours=ours, peer=peer, ratio=ratio, target=target, target_met=met)


def test_report_renders_the_results_found(tmp_path):
    report = load_report()
    results = [
        entry("train_samples_per_s", "tiny", 4.87, 3.21, 1.52, ">= 2.0", False),
        entry("train_peak_rss_mb", "tiny", 2681.0, 2828.0, 0.95, "<= 0.6", False),
        entry("encoder_s", "tiny", 0.300, 0.552, 1.84, ">= 1.3", True),
    ]
    machine = dict(date="2026-01-02 03:04 UTC", cpu="Test CPU", cores=2, threads=2, torch="9.9", modelscope="1.0")
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "details.json").write_text(json.dumps({"machine": machine}))
    text = report.render(tmp_path)
    prose = " ".join(text.split())  # paragraphs are wrapped
    assert "2026-01-02 03:04 UTC; Test CPU, 2 cores" in prose
    assert "| training, fp32 default step: samples/s, peak RSS | tiny | 4.87 /s, 2,681 MB | 3.21 /s, 2,828 MB |" in text
    assert "| encoder forward (s/batch) | tiny | 0.300 | 0.552 | 1.84× | ≥ 1.3 — met |" in text
    assert "## GPU" not in text and "Soak" not in text  # no results for them: no section
    shutil.copy(REPO / "tests" / "data" / "benchmarks" / "gpu_results.json", tmp_path / "gpu_results.json")
    text = report.render(tmp_path)
    prose = " ".join(text.split())
    assert "## GPU" in text and "185 samples/s" in prose and "NVIDIA H100" in prose
    out = tmp_path / "benchmarks.md"
    assert report.main(["--results", str(tmp_path), "--out", str(out)]) == 0 and out.read_text() == text


def test_report_renders_lora_and_onnx_results(tmp_path):
    report = load_report()
    lora = {
        "settings": dict(date="2026-01-02", machine="Test CPU", threads=2, batch=4, image_size=256, steps=5),
        "rows": [
            dict(size="tiny", mode="full", trainable=1000, total=1000, peak_mib=2240.0, step_s=4.0),
            dict(size="tiny", mode="lora", trainable=10, total=1010, peak_mib=1531.0, step_s=2.5),
        ],
    }
    onnx = {
        "settings": dict(date="2026-01-02", machine="Test CPU", threads=2, size="tiny", image_size=256),
        "rows": [
            dict(
                batch=8,
                eager_fast_s=3.1,
                eager_plain_s=5.14,
                onnx_s=1.447,
                speedup_vs_fast=2.142,
                speedup_vs_plain=3.551,
                same_best_tokens=True,
            )
        ],
    }
    (tmp_path / "lora.json").write_text(json.dumps(lora))
    (tmp_path / "onnx_runtime.json").write_text(json.dumps(onnx))
    text = report.render(tmp_path)
    assert "| tiny | lora | 10 (0.99 %) | 1,531 | 2.50 |" in text
    assert "| 8 | 3.100 | 5.140 | 1.447 | 2.14× | 3.55× | yes |" in text


def test_report_includes_the_scaling_tables(tmp_path):
    report = load_report()
    (tmp_path / "scaling.md").write_text("## Scaling (OFA-Tiny)\n\n| px | step (s) |\n|---:|---:|\n| 256 | 1.49 |\n")
    text = report.render(tmp_path)
    assert "### Scaling (OFA-Tiny)" in text and "| 256 | 1.49 |" in text
