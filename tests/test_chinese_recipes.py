"""Recipes of OFA-CN's fine-tuning data, from their public formats: MUGE Caption, RefCOCO/+/g-CN, Chinese OCR; their
samples feed the caption, grounding and ocr tasks with the Chinese vocabulary."""

from __future__ import annotations

import base64
import io
import json
import os
import random
from pathlib import Path

import pytest
from PIL import Image
from test_recipes import prepare, read_split

from data_recipes import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
BERT_CN_DIR = Path(os.environ.get("OFA_BERT_CN_DIR", REPO_ROOT.parent / "shared" / "ofa_bert_cn"))


def _jpeg(size=(60, 40), colour=(30, 160, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _b64(data: bytes, urlsafe: bool = True) -> str:
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()


def _tokenizer():
    if not (BERT_CN_DIR / "vocab.txt").is_file():
        pytest.skip(f"OFA-CN vocabulary not found in {BERT_CN_DIR}")
    from ofa_lightning.tokenizer import OFATokenizer

    return OFATokenizer.from_bert_files(BERT_CN_DIR)


def _example(task_name: str, sample: dict, **options):
    from ofa_lightning.tasks import build_task

    task = build_task(task_name, _tokenizer(), image_size=64, **options)
    image = Image.open(io.BytesIO(sample["jpg"]))
    return task, task.build_example(sample["json"], image, False, random.Random(0))


def test_recipes_are_listed(capsys):
    assert cli.main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("muge_caption", "refcoco_cn", "chinese_ocr"))


def test_muge_caption(tmp_path):
    root = tmp_path / "muge"
    root.mkdir()
    jpg = _jpeg()
    captions = {"1001": ["夏季新款女装连衣裙", "清新碎花长裙"], "1002": ["男士休闲运动鞋"]}
    for split, ids in (("train", ["1001", "1002", "1003"]), ("valid", ["1002"])):
        with open(root / f"IC_{split}.jsonl", "w", encoding="utf-8") as f:
            for i in ids:
                if i in captions:
                    f.write(json.dumps({"image_id": i, "text": captions[i]}, ensure_ascii=False) + "\n")
        (root / f"IC_{split}.tsv").write_text("".join(f"{i}\t{_b64(jpg)}\n" for i in ids), encoding="utf-8")
    manifest = prepare("muge_caption", "--root", root, "--out", tmp_path / "out")
    assert manifest["splits"]["train"]["num_samples"] == 2
    assert manifest["splits"]["train"]["skip_reasons"] == {"empty text": 1}  # 1003 has no captions
    assert manifest["splits"]["val"]["num_samples"] == 1
    train = {s["json"]["image_id"]: s for s in read_split(tmp_path / "out", "train")}
    assert train["1001"]["json"]["captions"] == captions["1001"] and train["1001"]["jpg"] == jpg
    task, ex = _example("caption", train["1001"])
    assert task.prompt == "图片描述了什么内容?" and task.metrics == ("cider_zh", "bleu_zh", "rouge_l_zh")
    assert ex.meta["reference"] == captions["1001"]


def test_refcoco_cn(tmp_path):
    jpg = _jpeg(size=(100, 80))
    tsv = tmp_path / "refcoco_val.tsv"
    rows = [f"7\t左边的绿色方块\t10,5,60,70\t{_b64(jpg)}", f"8\t坏的框\t1,2,3\t{_b64(jpg)}"]
    tsv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    manifest = prepare("refcoco_cn", "--tsv", f"val={tsv}", "--out", tmp_path / "out")
    assert manifest["splits"]["val"]["skip_reasons"] == {"bad box": 1}
    (sample,) = read_split(tmp_path / "out", "val")
    assert sample["json"]["expression"] == "左边的绿色方块" and sample["json"]["box"] == [10.0, 5.0, 60.0, 70.0]
    task, ex = _example("grounding", sample)
    assert ex.source == task.tokenizer.encode('这段文字" 左边的绿色方块 "描述的是哪个区域？', True, True)
    assert ex.meta["reference"] == [10.0, 5.0, 60.0, 70.0]


def test_chinese_ocr(tmp_path):
    jpg = _jpeg(size=(200, 32), colour=(240, 240, 240))
    tsv = tmp_path / "ocr_train.tsv"
    tsv.write_text(f"1\t{_b64(jpg, urlsafe=False)}\t中国银行 ATM\n2\tnot-base64!\t文字\n", encoding="utf-8")
    manifest = prepare("chinese_ocr", "--tsv", str(tsv), "--out", tmp_path / "out")
    assert manifest["splits"]["train"]["skip_reasons"] == {"bad base64": 1}
    (sample,) = read_split(tmp_path / "out", "train")
    assert sample["json"]["text"] == "中国银行 ATM" and sample["jpg"] == jpg
    task, ex = _example("ocr", sample)
    assert task.prompt == "图片上的文字是什么?" and ex.meta["reference"] == ["中国银行 atm"]
