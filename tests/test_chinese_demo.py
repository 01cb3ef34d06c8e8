"""``ofa-demo language=zh``: the shapes scenes described in Chinese, trained with OFA-CN's vocabulary and Chinese
instructions; the slow test shows a from-scratch Chinese run beating the trivial baselines."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from ofa_lightning.cli.demo import main

REPO_ROOT = Path(__file__).resolve().parents[1]
BERT_CN_DIR = Path(os.environ.get("OFA_BERT_CN_DIR", REPO_ROOT.parent / "shared" / "ofa_bert_cn"))
pytestmark = pytest.mark.skipif(
    not (BERT_CN_DIR / "vocab.txt").is_file(), reason=f"OFA-CN vocabulary not found in {BERT_CN_DIR}"
)


def test_chinese_shapes_text():
    from data_recipes import shapes_language_zh as zh
    from data_recipes.shapes_scene import draw_scene

    scene, _ = draw_scene(random.Random(3), 96, (3,), (0.18, 0.34))
    refs = zh.captions(scene, random.Random(0))
    assert len(refs) == 5 and all("的" in r and not any(c.isascii() and c.isalpha() for c in r) for r in refs)
    qs = zh.questions(scene, random.Random(0), 4)
    assert qs and all(q.question.endswith("？") for q in qs)
    assert {q.answer for q in qs} <= set(zh.COLOUR_WORDS.values()) | set(zh.SHAPE_WORDS.values()) | {
        "有",
        "没有",
        *"012345",
    }


def test_chinese_demo_end_to_end_on_tiny_schedule(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OFA_BERT_CN_DIR", str(BERT_CN_DIR))
    argv = ["--root", str(tmp_path), "--num-images", "60", "language=zh", "debug=fdr", "data.micro_batch_size=4"]
    assert main([*argv, "data.task_options.image_size=64"]) == 0
    report = json.loads(Path(capsys.readouterr().out.strip().splitlines()[-1]).read_text())
    assert report["language"] == "zh" and report["metrics"]["caption CIDEr-D"]["key"] == "test/caption/cider_zh"
    for row in report["metrics"].values():
        assert row["value"] == row["value"] and row["baseline"] == row["baseline"]  # logged, not NaN
    run_dir = Path(report["run_dir"])
    from ofa_lightning.tokenizer import OFATokenizer

    tokenizer = OFATokenizer.load(run_dir / "tokenizer")
    assert tokenizer.language == "zh" and tokenizer.num_bins == 32
    captions = [json.loads(line) for line in (tmp_path / "data" / "shapes_zh" / "raw" / "dataset_coco.json").open()]
    assert "的" in captions[0]["images"][0]["sentences"][0]["raw"]
    # detection's labels are Chinese too ("红色 菱形"), in the words of the referring expressions
    detection = json.loads((tmp_path / "data" / "shapes_zh" / "raw" / "detection" / "instances_train.json").read_text())
    from data_recipes.shapes_language_zh import COLOUR_WORDS, SHAPE_WORDS

    assert {c["name"] for c in detection["categories"]} == set(SHAPE_WORDS.values())
    assert {a["color"] for a in detection["annotations"]} <= set(COLOUR_WORDS.values())


@pytest.mark.slow
def test_chinese_demo_beats_the_baselines(tmp_path, capsys, monkeypatch):
    """The English demo's margins (≥ 2× CIDEr-D, ≥ +0.3 VQA accuracy, ≥ +0.3 Acc@0.5), from scratch in Chinese, on
    the Chinese demo's own schedule (``ofa-demo language=zh`` as a user runs it: 2,500 steps)."""
    monkeypatch.setenv("OFA_BERT_CN_DIR", str(BERT_CN_DIR))
    assert main(["--root", str(tmp_path), "language=zh"]) == 0
    report = json.loads(Path(capsys.readouterr().out.strip().splitlines()[-1]).read_text())
    rows = report["metrics"]
    assert rows["caption CIDEr-D"]["value"] >= 2.0 * rows["caption CIDEr-D"]["baseline"], rows
    assert rows["VQA accuracy"]["value"] >= rows["VQA accuracy"]["baseline"] + 0.3, rows
    assert rows["grounding Acc@0.5"]["value"] >= rows["grounding Acc@0.5"]["baseline"] + 0.3, rows
