"""VQA accuracy: the official VQA evaluation (answer normalisation + 10-annotator accuracy) and
OFA's soft-score lookup, as a DDP-safe torchmetrics Metric.

Official accuracy for one question with 10 human answers: for each of the 10 leave-one-out subsets of
9 answers, ``acc = min(1, #answers in the subset equal to the prediction / 3)``; the question scores
the mean over the 10 subsets. With ``m`` matching humans that is 0, 0.3, 0.6, 0.9, 1.0 for m = 0..4+.

Normalisation (:func:`normalize_vqa_answer`) follows the official script:

1. newlines/tabs -> spaces, strip;
2. punctuation ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``: deleted if the original answer has that
   character next to a space or contains a digit-comma-digit pattern, otherwise replaced by a space
   (``black-and-white`` -> ``black and white``, ``1,000`` -> ``1000``);
3. every ``.`` not followed by a digit is removed (``yes.`` -> ``yes``, ``3.5`` kept);
4. lower-case, split on whitespace, number words ``none/zero..ten`` -> digits, articles ``a an the``
   dropped, apostrophe-less contractions restored (``dont`` -> ``don't``), re-join with single spaces.

Ground-truth handling (``gt_processing``): ``"full"`` (default) normalises every GT answer with all the
steps above. ``"official"`` reproduces the official script literally: GT answers only get step 2-3 and
only when the 10 answers are not all identical. The official annotation files are already
normalised, so both agree on them; ``"full"`` is robust for raw answer lists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any, Union

import torch
from torch import Tensor

from ._base import IdsLike, SampleScoreMetric

__all__ = ["VQAAccuracy", "normalize_vqa_answer", "vqa_official_accuracy"]

_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# The official pattern is "(?!<=\d)(\.)(?!\d)"; its first group is a (no-op) look-*ahead*, so it
# removes every period that is not followed by a digit.
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = {"a", "an", "the"}

# Canonical contractions whose apostrophe-less spellings are restored. Spellings that are ordinary
# words (its, were, well, ill, hell, shell, wed, lets, id, im, ...) are deliberately absent, as they
# are from the official table.
_CONTRACTIONS = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've
mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't
shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd someone'd've someone'll
someone's something'd something'd've something'll that's there'd there'd've there're there's they'd
they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've
when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've
wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()


def _contraction_map() -> dict[str, str]:
    """Map every spelling with one or more apostrophes dropped to the canonical form."""
    table: dict[str, str] = {}
    for canon in _CONTRACTIONS:
        pos = [i for i, ch in enumerate(canon) if ch == "'"]
        for r in range(1, len(pos) + 1):
            for drop in combinations(pos, r):
                key = "".join(ch for i, ch in enumerate(canon) if i not in drop)
                table.setdefault(key, canon)
    return table


CONTRACTIONS = _contraction_map()


def _process_punctuation(text: str) -> str:
    out = text
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCT:
        # the condition looks at the *original* text, as in the official script
        if delete_all or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def _process_digit_article(text: str) -> str:
    words = []
    for w in text.lower().split():
        w = _NUMBER_WORDS.get(w, w)
        if w not in _ARTICLES:
            words.append(CONTRACTIONS.get(w, w))
    return " ".join(words)


def normalize_vqa_answer(answer: str) -> str:
    """Full official normalisation of one answer (see module docstring)."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(answer))


def vqa_official_accuracy(pred: str, gt_answers: Sequence[str], gt_processing: str = "full") -> float:
    """Accuracy of one prediction against the (usually 10) human answers."""
    if len(gt_answers) == 0:
        raise ValueError("VQA accuracy needs at least one ground-truth answer")
    p = normalize_vqa_answer(pred)
    if gt_processing == "full":
        gts = [normalize_vqa_answer(a) for a in gt_answers]
    elif gt_processing == "official":
        gts = [a.replace("\n", " ").replace("\t", " ").strip() for a in gt_answers]
        if len(set(gts)) > 1:
            gts = [_process_punctuation(a) for a in gts]
    else:
        raise ValueError(f"gt_processing must be 'full' or 'official', got {gt_processing!r}")
    m = sum(g == p for g in gts)
    # leave-one-out over the answers: a matching answer leaves m-1 matches, another one leaves m
    total = sum(min(1.0, (m - (g == p)) / 3.0) for g in gts)
    return total / len(gts)


class VQAAccuracy(SampleScoreMetric):
    """Mean VQA accuracy. States: ``value_sum``/``count`` (plus per-sample rows when ids are given).

    ``update(preds, refs, ids=None)`` where each ``refs[i]`` is either

    * a list of human answers (official 10-annotator accuracy with normalisation), or
    * a ``{answer: confidence}`` dict (OFA soft score: the confidence of the predicted answer, 0 if
      absent). The lookup is exact after ``strip()``, as in OFA; ``normalize_soft=True`` normalises
      both sides first (max confidence when keys collide).

    Args:
        gt_processing: ``"full"`` or ``"official"`` (see module docstring).
        normalize_soft: normalise answers in soft-score mode.
    """

    value_names = ("acc",)

    def __init__(self, gt_processing: str = "full", normalize_soft: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if gt_processing not in ("full", "official"):
            raise ValueError(f"gt_processing must be 'full' or 'official', got {gt_processing!r}")
        self.gt_processing = gt_processing
        self.normalize_soft = normalize_soft

    def _soft(self, pred: str, ref: Mapping[str, float]) -> float:
        if not self.normalize_soft:
            return float(ref.get(pred.strip(), 0.0))
        table: dict[str, float] = {}
        for ans, conf in ref.items():
            key = normalize_vqa_answer(ans)
            table[key] = max(table.get(key, float("-inf")), float(conf))
        return table.get(normalize_vqa_answer(pred), 0.0)

    def update(
        self, preds: Sequence[str], refs: Sequence[Union[Sequence[str], Mapping[str, float]]], ids: IdsLike = None
    ) -> None:
        if isinstance(preds, str) or len(preds) != len(refs):
            raise ValueError(f"preds must be a list of strings with one entry per refs item ({len(refs)})")
        scores = []
        for pred, ref in zip(preds, refs):
            if isinstance(ref, Mapping):
                scores.append(self._soft(pred, ref))
            elif isinstance(ref, str):
                raise ValueError("each refs item must be a list of answers or an {answer: confidence} dict")
            else:
                scores.append(vqa_official_accuracy(pred, ref, self.gt_processing))
        self._accumulate(torch.tensor(scores, dtype=torch.float64), ids)

    def compute(self) -> Tensor:
        return self.means()[0]
