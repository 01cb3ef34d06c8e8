"""CIDEr-D, BLEU-1..4, ROUGE-L on raw captions equal pycocoevalcap end to end (its Java PTBTokenizer and
scorers), per image and overall, to 1e-9; METEOR through the official Java tool (``official`` mode).

``tests/data/metrics/caption_cases.json.gz``: 250 images, 5 references and 1 prediction each, drawn from
the noisy PTB corpus (``_metrics_helpers.noisy_caption_corpus``; half the predictions are edited copies
of a reference so the scores are not all near zero), with pycocoevalcap's scores. The pool leaves out the
rare captions whose pycocoevalcap tokens depend on the caption written after them (ending in ``nos.``,
``fig.``, a single-letter acronym ...: see :mod:`ofa_lightning.metrics.ptb_tokenizer`), which the kit
tokenizes as if followed by an ordinary caption; ``test_line_end_context_corner`` shows that corner. Regenerate with
``python tests/test_metrics_caption_official.py`` (needs Java). SPICE is not compared: pycocoevalcap's
SPICE downloads Stanford CoreNLP 3.6.0 models on first use, which these machines cannot.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path

import pytest
from _metrics_helpers import noisy_caption_corpus

from ofa_lightning.metrics import (
    BLEU,
    ROUGEL,
    CIDErD,
    bleu_from_stats,
    bleu_stats,
    official_caption_scores,
    ptb_tokenize,
    ptb_tokenize_lines,
    rouge_l_scores,
    simple_tokenize,
)

DATA = Path(__file__).parent / "data" / "metrics" / "caption_cases.json.gz"
TOL = 1e-9
needs_java = pytest.mark.skipif(
    shutil.which("java") is None, reason="needs a `java` executable (pycocoevalcap's Java tools)"
)


def _context_free(caption: str) -> bool:
    return (
        len({ptb_tokenize(caption), *(ptb_tokenize_lines([caption, nxt])[0] for nxt in ("1 b", "A b", "The b"))}) == 1
    )


def make_cases(n_images: int = 250, seed: int = 36) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    corpus = noisy_caption_corpus(20000)[1000:]

    def draw() -> str:
        while not _context_free(c := rng.choice(corpus)):
            pass
        return c

    preds, refs = [], []
    while len(preds) < n_images:
        rs = [draw() for _ in range(5)]
        if rng.random() < 0.5:
            words = rng.choice(rs).split(" ")
            if len(words) > 2 and rng.random() < 0.7:
                del words[rng.randrange(len(words))]
            pred = " ".join(words)
            pred = pred.upper() if rng.random() < 0.1 else pred
        else:
            pred = rng.choice(corpus)
        if _context_free(pred):
            preds.append(pred)
            refs.append(rs)
    return preds, refs


@pytest.fixture(scope="module")
def cases() -> dict:
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def kit(cases):
    preds, refs = cases["preds"], cases["refs"]
    ids = list(range(len(preds)))
    cider, bleu, rouge = CIDErD(), BLEU(), ROUGEL()
    for m in (cider, bleu, rouge):
        m.update(preds, refs, ids)
    tok_p = [simple_tokenize(p) for p in preds]
    tok_r = [[simple_tokenize(r) for r in rs] for rs in refs]
    return cider, bleu, rouge, tok_p, tok_r


def test_cases_are_meaningful(cases):
    assert len(cases["preds"]) == 250 and cases["cider"] > 0.1 and cases["bleu_4"] > 0.01
    assert make_cases() == (cases["preds"], cases["refs"])


def test_cider_d_equals_pycocoevalcap_per_image_and_overall(cases, kit):
    cider, *_ = kit
    per = cider.per_sample()
    assert max(abs(per[i] - v) for i, v in enumerate(cases["cider_per_image"])) <= TOL
    assert abs(float(cider.compute()) - cases["cider"]) <= TOL


def test_bleu_equals_pycocoevalcap_per_image_and_overall(cases, kit):
    _, bleu, _, tok_p, tok_r = kit
    out = bleu.compute()
    for k in range(1, 5):
        assert abs(float(out[f"bleu_{k}"]) - cases[f"bleu_{k}"]) <= TOL
    for i, (p, rs) in enumerate(zip(tok_p, tok_r)):
        mine = bleu_from_stats(bleu_stats(p, rs))
        for k in range(4):
            assert abs(mine[k] - cases[f"bleu_{k + 1}_per_image"][i]) <= TOL


def test_rouge_l_equals_pycocoevalcap_per_image_and_overall(cases, kit):
    _, _, rouge, tok_p, tok_r = kit
    per = rouge_l_scores(tok_p, tok_r)
    assert max(abs(a - b) for a, b in zip(per, cases["rouge_l_per_image"])) <= TOL
    assert abs(float(rouge.compute()) - cases["rouge_l"]) <= TOL


def test_line_end_context_corner():
    # pycocoevalcap's Java lexer looks past the end of a line here; the kit sees an ordinary next caption
    assert ptb_tokenize_lines(["see fig.", "3 dogs"])[0] == "see fig."
    assert ptb_tokenize_lines(["see fig.", "two dogs"])[0] == ptb_tokenize("see fig.") == "see fig"
    assert ptb_tokenize_lines(["the letter A.", "A dog"])[0] == "the letter a"
    assert ptb_tokenize("the letter A.") == "the letter a."


@pytest.mark.slow
@needs_java
def test_official_mode_equals_committed_pycocoevalcap_scores_including_meteor(cases):
    out = official_caption_scores(cases["preds"], cases["refs"], per_image=True)
    for name in ("meteor", "cider", "rouge_l", "bleu_4"):
        assert abs(out[name] - cases[name]) <= TOL
        assert max(abs(a - b) for a, b in zip(out[f"{name}_per_image"], cases[f"{name}_per_image"])) <= TOL


if __name__ == "__main__":
    preds, refs = make_cases()
    scores = official_caption_scores(preds, refs, per_image=True)
    with gzip.open(DATA, "wt", encoding="utf-8", compresslevel=9) as f:
        json.dump({"preds": preds, "refs": refs, **scores}, f, ensure_ascii=False)
    print(f"wrote {DATA}: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items() if isinstance(v, float)))
