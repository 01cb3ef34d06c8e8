"""The Java-free PTB tokenizer equals pycocoevalcap's Stanford PTBTokenizer pipeline, token for token.

``tests/data/metrics/ptb_corpus.json.gz`` holds the 20,000 noisy captions of
``_metrics_helpers.noisy_caption_corpus()`` and pycocoevalcap's tokenization of them (one
``PTBTokenizer().tokenize`` call, Java 17, stanford-corenlp-3.4.1.jar). Regenerate it with
``python tests/test_metrics_ptb.py`` after changing the generator.
"""

from __future__ import annotations

import gzip
import json
import shutil
import unicodedata
from pathlib import Path

import pytest
from _metrics_helpers import java_ptb_reference, noisy_caption_corpus

from ofa_lightning.metrics import ptb_tokenize, ptb_tokenize_lines, simple_tokenize

DATA = Path(__file__).parent / "data" / "metrics" / "ptb_corpus.json.gz"
N_CAPTIONS = 20000
needs_java = pytest.mark.skipif(
    shutil.which("java") is None, reason="needs a `java` executable (pycocoevalcap's PTBTokenizer)"
)


@pytest.fixture(scope="module")
def corpus() -> dict:
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        return json.load(f)


def test_corpus_covers_the_hard_cases(corpus):
    caps = corpus["captions"]
    assert len(caps) >= 20000 and caps == noisy_caption_corpus(N_CAPTIONS)
    text = "".join(caps)
    assert all(ch in text for ch in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")  # every ASCII punctuation mark
    for needle in (
        "U.S.",
        "a.m.",
        "Mr.",
        "don't",
        "dog's",
        "black-and-white",
        "and/or",
        "1,000",
        "3.5",
        "...",
        "--",
        "\u2014",
        "\u201c",
        "\u2018",
        "\u00e9",
        "\u6771",
        "\U0001f600",
        "&amp;",
        "\t",
        "  ",
    ):
        assert needle in text, needle
    assert any(c != c.strip() for c in caps) and any(c[:1].isupper() for c in caps)
    assert any(unicodedata.category(ch) == "So" for ch in text)


def test_java_free_tokenizer_equals_committed_java_output(corpus):
    mine = ptb_tokenize_lines(corpus["captions"])
    diffs = [(c, a, b) for c, a, b in zip(corpus["captions"], mine, corpus["pycocoevalcap"]) if a != b]
    assert len(mine) == len(corpus["pycocoevalcap"])
    assert not diffs, f"{len(diffs)} differences, first: {diffs[:3]}"


def test_single_caption_equals_batch_except_line_end_context(corpus):
    # ptb_tokenize sees a caption as a line followed by a line break: equal to the batch output wherever
    # the next caption cannot change it (see the module docstring of ofa_lightning.metrics.ptb_tokenizer)
    caps, ref = corpus["captions"][:3000], corpus["pycocoevalcap"][:3000]
    diffs = [i for i, (c, r) in enumerate(zip(caps, ref)) if ptb_tokenize(c) != r]
    assert 0 < len(diffs) <= 3
    for i in diffs:  # each one ends in a period and is followed by a caption starting with a digit or capital
        assert caps[i].endswith(".") and (caps[i + 1][:1].isdigit() or caps[i + 1][:1].isupper()), caps[i : i + 2]
        assert ptb_tokenize_lines([caps[i], "a b"])[0] == ptb_tokenize(caps[i])
    assert simple_tokenize is ptb_tokenize


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("A man riding a horse.", "a man riding a horse"),
        ("The U.S. Army at 5 p.m. with Mr. Smith, etc.", "the u.s. army at 5 p.m. with mr. smith etc."),
        ("I cannot go, gonna stay", "i can not go gon na stay"),
        ('The "best" (only) pizza; really?', "the best -lrb- only -rrb- pizza really"),
        ("AT&T and S&P-500 cost $5 & 50% off", "at&t and s&p-500 cost $ 5 & 50 % off"),
        ("the 1 1/2 cup \u00bd call 555-1234", "the 1\u00a01/2 cup 1/2 call 555-1234"),
        ("caf\u00e9 \u039f\u0394\u039f\u03a3 \U0001f600 ok", "caf\u00e9 \u03bf\u03b4\u03bf\u03c2 ok"),
        ("<b>bold</b> &amp; &quot;x&quot; :)", "<b> bold </b> & x :-rrb-"),
    ],
)
def test_known_pycocoevalcap_outputs(raw, expected):
    assert ptb_tokenize(raw) == expected


def test_line_separators_are_refused_in_batch_mode():
    with pytest.raises(ValueError, match="line separator"):
        ptb_tokenize_lines(["a\u2028b", "c"])
    assert ptb_tokenize("a\u2028b") == "a b"


@pytest.mark.slow
@needs_java
def test_committed_reference_is_what_java_produces_now(corpus):
    assert java_ptb_reference(corpus["captions"]) == corpus["pycocoevalcap"]


@needs_java
def test_java_on_a_fresh_corpus_sample():
    caps = noisy_caption_corpus(1500)[-1000:] + noisy_caption_corpus(600, seed=7)
    assert ptb_tokenize_lines(caps) == java_ptb_reference(caps)


if __name__ == "__main__":
    captions = noisy_caption_corpus(N_CAPTIONS)
    with gzip.open(DATA, "wt", encoding="utf-8", compresslevel=9) as f:
        json.dump({"captions": captions, "pycocoevalcap": java_ptb_reference(captions)}, f, ensure_ascii=False)
    print(f"wrote {DATA}")
