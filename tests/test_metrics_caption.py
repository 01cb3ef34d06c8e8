"""CIDEr-D / BLEU / ROUGE-L parity with pycocoevalcap, tokenizer behaviour, multi-rank merging."""

from __future__ import annotations

import math
import pickle
from collections import defaultdict

import numpy as np
import pytest
import torch
from _metrics_helpers import coco_dicts, random_caption_sets, simulated_sync
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer
from pycocoevalcap.rouge.rouge import Rouge

from ofa_lightning.metrics import (
    BLEU,
    ROUGEL,
    CIDErD,
    CiderDfTable,
    bleu_corpus,
    cider_d_scores,
    rouge_l_scores,
    simple_tokenize,
)

N_IMAGES = 240


@pytest.fixture(scope="module")
def data():
    preds, refs = random_caption_sets(N_IMAGES, seed=1234)
    gts, res = coco_dicts(preds, refs)
    ids = list(range(N_IMAGES))
    return preds, refs, ids, gts, res


def _fill(metric, preds, refs, ids, batch=17):
    for s in range(0, len(preds), batch):
        metric.update(preds[s : s + batch], refs[s : s + batch], ids[s : s + batch])
    return metric


def test_generated_data_has_edge_cases(data):
    preds, refs, _, gts, res = data
    assert any(r[0] == "" for r in res.values())  # empty predictions
    assert any("" in g for g in gts.values())  # empty references
    assert any(res[i][0] in gts[i] and res[i][0] for i in res)  # prediction copied from a reference
    assert any(len(set(g)) < len(g) for g in gts.values())  # duplicate references


def test_cider_matches_pycocoevalcap(data):
    preds, refs, ids, gts, res = data
    ref_score, ref_scores = Cider().compute_score(gts, res)
    metric = _fill(CIDErD(), preds, refs, ids)
    assert abs(float(metric.compute()) - ref_score) <= 1e-6
    assert ref_score > 0.05  # not a degenerate all-zero comparison
    per = metric.per_sample()
    np.testing.assert_allclose([per[i] for i in range(N_IMAGES)], ref_scores, atol=1e-6, rtol=0)


def test_bleu_matches_pycocoevalcap(data):
    preds, refs, ids, gts, res = data
    ref_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = _fill(BLEU(), preds, refs, ids).compute()
    assert list(out) == ["bleu_1", "bleu_2", "bleu_3", "bleu_4"]
    for k in range(4):
        assert abs(float(out[f"bleu_{k + 1}"]) - ref_bleu[k]) <= 1e-6
    assert ref_bleu[3] > 0.01


def test_bleu_brevity_penalty_and_closest_reflen():
    # pycocoevalcap picks the closest ref length, ties resolved to the shorter one
    gts = {0: ["a b c d e f", "a b"], 1: ["x y z w", "x y z w v u"]}
    res = {0: ["a b c d"], 1: ["x y z w v"]}
    ref_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    ours = bleu_corpus([res[0][0], res[1][0]], [gts[0], gts[1]])
    np.testing.assert_allclose(ours, ref_bleu, atol=1e-12)


def test_rouge_l_matches_pycocoevalcap(data):
    preds, refs, ids, gts, res = data
    ref_score, ref_scores = Rouge().compute_score(gts, res)
    metric = _fill(ROUGEL(), preds, refs, ids)
    assert abs(float(metric.compute()) - ref_score) <= 1e-6
    np.testing.assert_allclose(rouge_l_scores([res[i][0] for i in res], [gts[i] for i in gts]), ref_scores, atol=1e-12)


def test_variable_number_of_references():
    preds, refs = random_caption_sets(60, seed=7, n_refs=6)
    refs = [r[: 1 + i % 6] for i, r in enumerate(refs)]
    gts, res = coco_dicts(preds, refs)
    ids = list(range(60))
    assert abs(float(_fill(CIDErD(), preds, refs, ids).compute()) - Cider().compute_score(gts, res)[0]) <= 1e-6
    ref_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = _fill(BLEU(), preds, refs, ids).compute()
    assert max(abs(float(out[f"bleu_{k + 1}"]) - ref_bleu[k]) for k in range(4)) <= 1e-6


class _FixedDfScorer(CiderScorer):
    """pycocoevalcap's scorer with an injected document-frequency table (ref_len stays log(#images))."""

    fixed_df: dict = {}

    def compute_doc_freq(self):
        self.document_frequency = defaultdict(float, self.fixed_df)


def test_precomputed_df_matches_pycocoevalcap_with_injected_df(data):
    preds, refs, _, gts, res = data
    # "training" df from other captions; at most N_IMAGES documents (pycocoevalcap asserts df <= #images)
    train_preds, train_refs = random_caption_sets(150, seed=99)
    table = CiderDfTable.from_references([[simple_tokenize(x) for x in r] for r in train_refs])
    assert table.num_documents == 150
    scorer = _FixedDfScorer(n=4, sigma=6.0)
    scorer.fixed_df = table.document_frequency
    for i in gts:
        scorer += (res[i][0], gts[i])
    ref_score, ref_scores = scorer.compute_score()
    # pycocoevalcap's ref_len is log(#evaluated images), so pass that explicitly
    ours = cider_d_scores([res[i][0] for i in res], [gts[i] for i in gts], table.document_frequency, math.log(N_IMAGES))
    np.testing.assert_allclose(ours, ref_scores, atol=1e-9)
    own = cider_d_scores(
        [res[i][0] for i in res], [gts[i] for i in gts], CiderDfTable.from_references(list(gts.values()))
    )
    assert abs(np.mean(ours) - np.mean(own)) > 1e-3  # the df really changes the score


def test_metric_with_df_table_and_pickle(data, tmp_path):
    preds, refs, ids, gts, res = data
    train = [[simple_tokenize(x) for x in r] for r in random_caption_sets(300, seed=5)[1]]
    table = CiderDfTable.from_references(train)
    path = tmp_path / "coco-train-words.p"
    table.to_pickle(path)
    with open(path, "rb") as f:
        raw = pickle.load(f)
    assert raw["ref_len"] == 300 and isinstance(next(iter(raw["document_frequency"])), tuple)
    expected = np.mean(cider_d_scores([res[i][0] for i in res], [gts[i] for i in gts], table))
    for df in (table, str(path)):
        assert abs(float(_fill(CIDErD(df=df), preds, refs, ids).compute()) - expected) <= 1e-9
    # default (df from the evaluated references) differs
    assert abs(float(_fill(CIDErD(), preds, refs, ids).compute()) - expected) > 1e-3


def test_cider_pure_function_requires_ref_len_for_mapping():
    with pytest.raises(ValueError, match="ref_len"):
        cider_d_scores(["a b"], [["a b"]], {("a",): 1.0})


def test_cider_scst_style_rewards_rank_captions():
    refs = [["a man riding a bike on the street", "a man rides a bike", "person on a bicycle in the street"]] * 3
    table = CiderDfTable.from_references(refs + [["a cat on a table"], ["two dogs in a park"]])
    good, bad, empty = cider_d_scores(["a man riding a bike", "a cat on a table", ""], refs, table)
    assert good > bad > empty == 0.0


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("A man riding a horse.", "a man riding a horse"),
        ("Two dogs, playing!", "two dogs playing"),
        ("A man's hat", "a man 's hat"),
        ("They don't know", "they do n't know"),
        ("A black-and-white photo - old", "a black-and-white photo old"),
        ('The "best" (only) pizza; really?', "the best -lrb- only -rrb- pizza really"),
        ("It costs 3.5 dollars, about 1,000 yen...", "it costs 3.5 dollars about 1,000 yen"),
        ("\u2018quoted\u2019 at five o'clock", "quoted at five o'clock"),
        ("  ...  ", ""),
    ],
)
def test_simple_tokenize(raw, expected):
    assert simple_tokenize(raw) == expected


def test_tokenizer_none_keeps_strings():
    m = ROUGEL(tokenizer=None)
    m.update(["A Dog."], [["a dog"]], [0])
    assert m.samples()[1] == ["A Dog."]
    assert float(m.compute()) == 0.0
    m2 = ROUGEL()
    m2.update(["A Dog."], [["a dog"]], [0])
    assert float(m2.compute()) == pytest.approx(1.0)


def _split_two_ranks(preds, refs, ids):
    half = len(preds) // 2
    # rank 1 also gets sample `half - 1` (padding duplicate from DistributedSampler)
    a = (preds[:half], refs[:half], ids[:half])
    b = ([preds[half - 1]] + preds[half:], [refs[half - 1]] + refs[half:], [ids[half - 1]] + ids[half:])
    return a, b


@pytest.mark.parametrize("cls", [CIDErD, BLEU, ROUGEL])
def test_two_rank_merge_state_dedupes(cls, data):
    preds, refs, ids, _, _ = data
    single = _fill(cls(), preds, refs, ids).compute()
    (pa, ra, ia), (pb, rb, ib) = _split_two_ranks(preds, refs, ids)
    m0, m1 = _fill(cls(), pa, ra, ia), _fill(cls(), pb, rb, ib)
    m0.merge_state(m1)
    assert len(m0.samples()[0]) == N_IMAGES  # 241 stored, one duplicate removed
    merged = m0.compute()
    if isinstance(single, dict):
        for k in single:
            assert abs(float(merged[k]) - float(single[k])) <= 1e-12
    else:
        assert abs(float(merged) - float(single)) <= 1e-12


def test_two_rank_simulated_dist_sync(data):
    preds, refs, ids, _, _ = data
    single = float(_fill(CIDErD(), preds, refs, ids).compute())
    (pa, ra, ia), (pb, rb, ib) = _split_two_ranks(preds, refs, ids)
    ranks = [_fill(CIDErD(), pa, ra, ia), _fill(CIDErD(), pb, rb, ib)]
    simulated_sync(ranks)
    for m in ranks:
        assert m.list_state("sample_ids").numel() == N_IMAGES + 1
        assert abs(float(m.compute()) - single) <= 1e-12


def test_duplicates_without_ids_are_kept(data):
    preds, refs, ids, _, _ = data
    m = CIDErD()
    m.update(preds[:3] + preds[:1], refs[:3] + refs[:1])  # no ids -> the repeat counts twice
    assert len(m.samples()[0]) == 4
    m2 = CIDErD()
    m2.update(preds[:3] + preds[:1], refs[:3] + refs[:1], [0, 1, 2, 0])
    assert len(m2.samples()[0]) == 3


def test_empty_rank_keeps_byte_dtype(data):
    preds, refs, ids, _, _ = data
    ranks = [_fill(BLEU(), preds[:20], refs[:20], ids[:20]), BLEU()]  # rank 1 saw no data
    simulated_sync(ranks)
    for m in ranks:
        assert m.pred_bytes.dtype == torch.uint8 and m.sample_ids.dtype == torch.long
        assert len(m.samples()[0]) == 20


def test_update_validation():
    m = CIDErD()
    with pytest.raises(ValueError):
        m.update(["a"], [[]], [0])
    with pytest.raises(ValueError):
        m.update(["a", "b"], [["a"]], [0, 1])
    with pytest.raises(ValueError):
        m.update(["a"], [["a"]], [-3])
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert float(CIDErD().compute()) == 0.0  # nothing updated -> 0, no crash


def test_unicode_round_trip():
    m = ROUGEL(tokenizer=None)
    m.update(["café über 猫"], [["café über 猫", "x"]], [1])
    assert m.samples()[1] == ["café über 猫"]
    assert float(m.compute()) == pytest.approx(1.0)
