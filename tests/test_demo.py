"""The interim demo runs every stage on real shards and writes its report."""
from __future__ import annotations

import json

from ofa_lightning.cli.demo import main


def test_demo_end_to_end_on_tiny_data(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "--num-images", "40", "--num-eval", "2", "--image-size", "64"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads(open(last).read())
    assert report["shard_counts"]["coco_caption"]["train"] == 32
    assert report["eval_images"] == 2 and len(report["predictions"]) == 2
    assert all(p["references"] for p in report["predictions"])
    assert 0.0 <= report["cider_d_untrained"] < 10
