"""Chinese caption metrics (MUGE Caption): OFA-CN's caption tokenisation, and the scores over it."""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

import pytest

from ofa_lightning.metrics import METRICS, build_metric, chinese_caption_tokenize

REPO_ROOT = Path(__file__).resolve().parents[1]
BERT_CN_DIR = Path(os.environ.get("OFA_BERT_CN_DIR", REPO_ROOT.parent / "shared" / "ofa_bert_cn"))


def test_rule_examples():
    assert chinese_caption_tokenize("一只白色的猫，在沙发上睡觉。") == "一 只 白 色 的 猫 ， 在 沙 发 上 睡 觉 。"
    assert chinese_caption_tokenize("夏季新款T恤 don't 123 Dogs!") == "夏 季 新 款 t 恤 dont 123 dogs"
    assert chinese_caption_tokenize("  ") == ""


@pytest.mark.skipif(not (BERT_CN_DIR / "vocab.txt").is_file(), reason=f"no OFA-CN vocab.txt in {BERT_CN_DIR}")
def test_rule_equals_ofa_cn_caption_validation():
    """OFA-Sys/OFA tasks/mm_tasks/caption.py _inference with bpe=bert: BertBPE.decode(BertBPE.encode(caption)),
    then string.punctuation deleted, then split on spaces (CiderD / BLEU)."""
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertTokenizer(str(BERT_CN_DIR / "vocab.txt"), do_lower_case=True)
    vocab = (BERT_CN_DIR / "vocab.txt").read_text(encoding="utf-8").split("\n")
    cjk = [t for t in vocab if len(t) == 1 and "\u4e00" <= t <= "\u9fff"]
    words = [t for t in vocab if t.isascii() and t.isalpha() and len(t) > 2][:2000]
    in_vocab = set(vocab)  # characters outside the vocabulary decode as [UNK] in OFA: not part of the rule
    punctuation = [c for c in string.punctuation + "，。？！、：；“”（）《》" if c in in_vocab]
    pieces = punctuation + ["n't", "'s", "'re", " ' "]
    rng = random.Random(0)
    transtab = str.maketrans({k: None for k in string.punctuation})
    for _ in range(1500):
        parts = []
        for _ in range(rng.randint(1, 10)):
            r = rng.random()
            parts.append(
                "".join(rng.choice(cjk) for _ in range(rng.randint(1, 5)))
                if r < 0.5
                else rng.choice(words).capitalize()
                if r < 0.7
                else str(rng.randint(0, 99999))
                if r < 0.8
                else rng.choice(pieces)
            )
        caption = "".join(p + rng.choice(["", " "]) for p in parts)
        decoded = bert.clean_up_tokenization(bert.convert_tokens_to_string(bert.tokenize(caption)))  # BertBPE.decode
        assert chinese_caption_tokenize(caption) == " ".join(decoded.translate(transtab).split()), caption


def test_metrics_are_registered_and_score_characters():
    assert {"cider_zh", "bleu_zh", "rouge_l_zh"} <= set(METRICS)
    preds = ["一只白色的猫在睡觉", "红色连衣裙"]
    refs = [["一只白猫在沙发上睡觉", "白色的猫正在睡觉"], ["红色的连衣裙", "一条红色长裙"]]
    bleu, rouge, cider = (build_metric(name) for name in ("bleu_zh", "rouge_l_zh", "cider_zh"))
    for metric in (bleu, rouge, cider):
        metric.update(preds, refs, ids=[0, 1])
    scores = bleu.compute()
    assert 0.0 < float(scores["bleu_4"]) < float(scores["bleu_1"]) < 1.0
    assert 0.5 < float(rouge.compute()) < 1.0 and float(cider.compute()) > 0.0
    # the English (PTB, word-level) metric sees each unsegmented Chinese caption as one word: no overlap at all
    english = build_metric("bleu")
    english.update(preds, refs, ids=[0, 1])
    assert float(english.compute()["bleu_1"]) < 1e-6


def test_identical_captions_score_full_marks():
    refs = [["夏季新款女装连衣裙"], ["男士休闲运动鞋"]]
    bleu = build_metric("bleu_zh")
    bleu.update(["夏季新款女装连衣裙", "男士休闲运动鞋"], refs, ids=[0, 1])
    assert abs(float(bleu.compute()["bleu_4"]) - 1.0) < 1e-6
    rouge = build_metric("rouge_l_zh")
    rouge.update(["夏季新款女装连衣裙", "男士休闲运动鞋"], refs, ids=[0, 1])
    assert abs(float(rouge.compute()) - 1.0) < 1e-6
