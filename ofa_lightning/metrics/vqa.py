"""VQA accuracy: the official VQA evaluation (GT-Vision-Lab/VQA ``vqaEval.py``, current master) and
OFA's soft-score lookup, as a DDP-safe torchmetrics Metric.

Official accuracy of one prediction against the (usually 10) human answers, reproduced case for case
(``tests/test_metrics_vqa_official.py``: 644 crafted cases whose expected values come from running the
official script):

1. answers and prediction: newlines and tabs -> spaces, ``strip()``;
2. only if the answers are *not* all identical, every answer and the prediction are normalised
   (:func:`normalize_vqa_answer`); with ten identical answers the comparison is on the stripped raw
   strings (case-sensitive, punctuation kept);
3. for each answer, ``min(1, #other answers equal to the prediction / 3)``; the mean over the answers.
   With ``m`` matching humans out of 10 that is 0, 0.3, 0.6, 0.9, 1.0 for m = 0..4+.

Normalisation (:func:`normalize_vqa_answer`), as ``processPunctuation`` then ``processDigitArticle``:

* each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted if the answer has that character next to
  a space, or has a digit-comma-digit anywhere, and replaced by a space otherwise (``black-and-white`` ->
  ``black and white``, ``1,000`` -> ``1000``);
* a ``.`` not followed by a digit is deleted, at most 32 of them (the script passes ``re.UNICODE``, 32,
  as the ``count`` argument of ``sub``);
* lower-case, split on whitespace, ``none zero one .. ten`` -> digits, articles ``a an the`` dropped, then
  the script's contraction table (``dont`` -> ``don't``, including its quirks such as
  ``somebody'd`` -> ``somebodyd``), re-joined with single spaces.

``gt_processing``: ``"official"`` (default) is the script. ``"full"`` normalises answers and prediction
always, also when the ten answers are identical; it differs from the script only there (``"Yes"`` against
ten ``"yes"`` scores 1 instead of 0), which matters for raw answer lists but not for the official
annotation files, whose answers are already lower-case and normalised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ._base import IdsLike, SampleScoreMetric
from .registry import register_metric

__all__ = ["VQAAccuracy", "normalize_vqa_answer", "vqa_official_accuracy"]

_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The official pattern "(?!<=\d)(\.)(?!\d)" starts with a look-*ahead* for the text "<=digit", which
# never holds before a ".", so it deletes every period that is not followed by a digit.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_PERIOD_STRIP_COUNT = int(re.UNICODE)  # passed as sub()'s count by the official script
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = {"a", "an", "the"}

# The official contraction table, entry for entry (keys with capitals never match: the text is
# lower-cased first).
CONTRACTIONS = dict(
    pair.split("=")
    for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd
howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've
it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've
mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've
oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've
somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd
someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's
somethingd=something'd somethingd've=something'd've something'dve=something'd've somethingll=something'll
thats=that's thered=there'd thered've=there'd've there'dve=there'd've therere=there're theres=there's
theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've
twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's whereve=where've
whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll
whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've
wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've
y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've youll=you'll
youre=you're youve=you've
""".split()
)


def _process_punctuation(text: str) -> str:
    out = text
    delete_all = _COMMA_STRIP.search(text) is not None
    for p in _PUNCT:
        # the condition looks at the *original* text, as in the official script
        if (p + " ") in text or (" " + p) in text or delete_all:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, _PERIOD_STRIP_COUNT)


def _process_digit_article(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def _clean(answer: str) -> str:
    return answer.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(answer: str) -> str:
    """The official normalisation of one answer (see the module docstring)."""
    return _process_digit_article(_process_punctuation(_clean(answer)))


def vqa_official_accuracy(pred: str, gt_answers: Sequence[str], gt_processing: str = "official") -> float:
    """Accuracy of one prediction against the (usually 10) human answers (see the module docstring)."""
    if len(gt_answers) == 0:
        raise ValueError("VQA accuracy needs at least one ground-truth answer")
    if gt_processing not in ("official", "full"):
        raise ValueError(f"gt_processing must be 'official' or 'full', got {gt_processing!r}")
    gts = [_clean(a) for a in gt_answers]
    p = _clean(pred)
    if gt_processing == "full" or len(set(gts)) > 1:
        gts = [_process_digit_article(_process_punctuation(a)) for a in gts]
        p = _process_digit_article(_process_punctuation(p))
    m = sum(g == p for g in gts)
    # leave-one-out over the answers: a matching answer leaves m-1 matches, another one leaves m
    acc = [min(1, float(m - (g == p)) / 3) for g in gts]
    return float(sum(acc)) / len(acc)


@register_metric("vqa_acc")
class VQAAccuracy(SampleScoreMetric):
    """Mean VQA accuracy. States: ``value_sum``/``count`` (plus per-sample rows when ids are given).

    ``update(preds, refs, ids=None)`` where each ``refs[i]`` is either

    * a list of human answers (official 10-annotator accuracy with normalisation), or
    * a ``{answer: confidence}`` dict (OFA soft score: the confidence of the predicted answer, 0 if
      absent). The lookup is exact after ``strip()``, as in OFA; ``normalize_soft=True`` normalises
      both sides first (max confidence when keys collide).

    Args:
        gt_processing: ``"official"`` (default) or ``"full"`` (see the module docstring).
        normalize_soft: normalise answers in soft-score mode.
    """

    value_names = ("acc",)

    def __init__(self, gt_processing: str = "official", normalize_soft: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if gt_processing not in ("official", "full"):
            raise ValueError(f"gt_processing must be 'official' or 'full', got {gt_processing!r}")
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
        self, preds: Sequence[str], refs: Sequence[Sequence[str] | Mapping[str, float]], ids: IdsLike = None
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
