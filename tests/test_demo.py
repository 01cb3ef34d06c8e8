"""`make demo`'s job, end to end on a few steps: shards → train → test → baselines → demo_metrics.json."""
from __future__ import annotations

import json
from pathlib import Path

from ofa_lightning.cli.demo import main


def test_demo_end_to_end_on_tiny_schedule(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "--num-images", "60", "debug=fdr", "data.micro_batch_size=4",
                 "data.task_options.image_size=64"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads(Path(last).read_text())
    assert Path(last).parent.parent == tmp_path / "runs" / "demo"
    assert set(report["metrics"]) == {"caption CIDEr-D", "VQA accuracy", "grounding Acc@0.5"}
    for row in report["metrics"].values():
        assert row["value"] == row["value"] and row["baseline"] == row["baseline"]  # not NaN: the metric was logged
        assert {"margin", "target", "met"} <= set(row)
    assert report["wandb_offline_run"] and Path(report["wandb_offline_run"]).is_dir()
    run_dir = Path(report["run_dir"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "tokenizer").is_dir()
    # what offline W&B wrote: the evaluation metrics, the throughput keys and a prediction table per task
    from ofa_lightning.training.tracking import read_offline_run

    logged = read_offline_run(run_dir)
    assert {"test/caption/cider", "test/vqa/vqa_acc", "test/grounding/acc"} <= set(logged["keys"])
    assert any(k.startswith("perf/samples_per_s") for k in logged["keys"])
    assert any("grounding" in key for key in logged["tables"]) and logged["finished"]
    assert (run_dir / "metrics.csv").is_file()
