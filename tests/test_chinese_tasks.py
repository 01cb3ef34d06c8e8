"""OFA-CN's instructions, decoding and metrics in the tasks: caption, grounding, VQA and OCR with the Chinese
vocabulary (``language`` follows the tokenizer unless set)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ofa_lightning.tasks import build_task
from ofa_lightning.tokenizer import OFATokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
BERT_CN_DIR = Path(os.environ.get("OFA_BERT_CN_DIR", REPO_ROOT.parent / "shared" / "ofa_bert_cn"))
BPE_DIR = Path(os.environ.get("OFA_BPE_DIR", REPO_ROOT.parent / "shared" / "ofa_bpe"))
pytestmark = pytest.mark.skipif(
    not (BERT_CN_DIR / "vocab.txt").is_file(), reason=f"OFA-CN vocabulary not found in {BERT_CN_DIR}"
)


@pytest.fixture(scope="module")
def tok() -> OFATokenizer:
    return OFATokenizer.from_bert_files(BERT_CN_DIR)


def _image(w: int = 320, h: int = 240, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_caption_follows_the_chinese_vocabulary(tok):
    task = build_task("caption", tok, image_size=64)
    assert task.cfg["language"] == "zh" and task.prompt == "图片描述了什么内容?"
    ex = task.build_example({"id": "1", "captions": ["一只白色的猫在沙发上睡觉。"]}, _image(), False, random.Random(0))
    assert ex.source == tok.encode("图片描述了什么内容?", add_bos=True, add_eos=True)
    assert tok.decode(ex.target) == "一只白色的猫在沙发上睡觉。"  # only ASCII punctuation is removed, as in OFA
    # OFA-CN's MUGE decoding (generate_caption_cn.sh) and the Chinese metrics
    gen = task.generation_config()
    assert (gen.beam_size, gen.max_len_b, gen.no_repeat_ngram_size) == (8, 128, 3)
    assert task.metrics == ("cider_zh", "bleu_zh", "rouge_l_zh")
    assert task.parse_prediction(tok.encode(" 一只 猫, 在睡觉")) == "一只猫在睡觉"
    # an explicit language wins
    english = build_task("caption", tok, language="en", image_size=64)
    assert english.prompt == " what does the image describe?" and english.metrics == ("cider", "bleu", "rouge_l")
    assert english.generation_config().beam_size == 5


def test_grounding_vqa_and_tasks_without_a_chinese_instruction(tok):
    grounding = build_task("grounding", tok, image_size=64)
    sample = {"id": "g", "expression": "左边的白色杯子", "box": [10, 20, 100, 120]}
    ex = grounding.build_example(sample, _image(), False, random.Random(0))
    assert ex.source == tok.encode('这段文字" 左边的白色杯子 "描述的是哪个区域？', add_bos=True, add_eos=True)
    assert [tok.id_to_token(i).startswith("<bin_") for i in ex.target[:4]] == [True] * 4
    vqa = build_task("vqa", tok, image_size=64, candidates=["红色", "蓝色"])
    ex = vqa.build_example({"id": "v", "question": "杯子是什么颜色", "answers": ["红色"]}, _image(), False, None)
    assert ex.source == tok.encode("杯子是什么颜色?", add_bos=True, add_eos=True)
    # OFA-CN runs a task without a Chinese instruction with its English one; asking for zh is an error
    assert build_task("snli_ve", tok, image_size=64).cfg["language"] == "en"
    with pytest.raises(ValueError, match="has no 'zh' instruction"):
        build_task("snli_ve", tok, language="zh")


@pytest.mark.skipif(not (BPE_DIR / "dict.txt").is_file(), reason=f"OFA BPE files not found in {BPE_DIR}")
def test_english_vocabulary_keeps_english_instructions():
    bpe = OFATokenizer.from_ofa_files(BPE_DIR)
    assert bpe.language == "en"
    assert build_task("caption", bpe).prompt == " what does the image describe?"


def test_ocr_reads_a_text_line_as_a_caption(tok):
    task = build_task("ocr", tok, image_size=96)
    assert task.prompt == "图片上的文字是什么?"
    line = _image(w=400, h=40)
    ex = task.build_example({"id": "o", "text": "ＯＦＡ中文识别 2024"}, line, True, random.Random(1))
    assert tuple(ex.image.shape) == (3, 96, 96)
    assert ex.source == tok.encode("图片上的文字是什么?", add_bos=True, add_eos=True)
    assert tok.decode(ex.target) == "ofa中文识别2024"  # NFKC (full-width -> ASCII), lower-cased
    assert ex.meta["reference"] == ["ofa中文识别 2024"]
    # the line (400x40) is scaled to 96x64 (the short side at least 64 px) and edge-padded: 32 rows repeat an edge row
    repeated = sum(bool((ex.image[:, r] == ex.image[:, r + 1]).all()) for r in range(95))
    assert repeated == 32
    pred = task.parse_prediction(tok.encode("ofa 中文识别 2024"))
    assert pred == "ofa中文识别2024" and task.row_score(pred, ex.meta["reference"]) == 1.0
    assert task.generation_config().max_len_b == 64
    long = build_task("ocr", tok, max_tgt_length=5).clean_target("一二三四五六七")
    assert long == "一二三四五"


def test_ocr_metric():
    from ofa_lightning.metrics import build_metric

    metric = build_metric("ocr")
    metric.update(["中文识别", "abcd", ""], [["中文 识别"], ["abxd"], [""]], ids=[0, 1, 2])
    scores = metric.compute()
    assert abs(float(scores["acc"]) - 2 / 3) < 1e-9
    assert abs(float(scores["ned"]) - (1 + 0.75 + 1) / 3) < 1e-9
