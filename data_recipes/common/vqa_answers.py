"""VQA answer handling shared by the VQAv2 and OFA-TSV recipes: normalisation, soft scores, OFA's refs string.

Soft score (the official VQA accuracy of an answer against its 10 human answers): the average over the 10
leave-one-out subsets of 9 answers of min(1, matches / 3). With c matching answers out of 10 that gives
0.3 (c=1), 0.6 (c=2), 0.9 (c=3), 1.0 (c>=4). Answers are compared after a normalisation in the spirit of
the official evaluation (lower case, punctuation, number words, articles); `answer_conf` is keyed by the
normalised answer, while the raw strings are kept in `answers`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from data_recipes.common.errors import BadSample

_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_NON_DECIMAL_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")
_PUNCTUATION = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$:|~]")

OFA_REFS_ITEM_SEP = "&&"
OFA_REFS_CONF_SEP = "|!+"


def normalize_answer(answer: str) -> str:
    """'Two.' -> '2', 'the T-shirt' -> 't shirt', "dog's" -> 'dogs', '1,000' -> '1000', '2.5' stays."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _DIGIT_COMMA.sub("", text)
    text = _NON_DECIMAL_PERIOD.sub(" ", text)
    text = text.replace("'", "")
    text = _PUNCTUATION.sub(" ", text)
    words = [_NUMBER_WORDS.get(w, w) for w in text.split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(words)


def soft_scores(answers: Iterable[str]) -> dict[str, float]:
    """Normalised answer -> official VQA soft score, for every answer given at least once."""
    normalized = [normalize_answer(a) for a in answers]
    normalized = [a for a in normalized if a]
    total = len(normalized)
    if total == 0:
        return {}
    counts = Counter(normalized)
    scores = {}
    for answer, count in counts.items():
        # `count` subsets drop one of the matching answers, the other `total - count` drop a different one
        score = (count * min(1.0, (count - 1) / 3) + (total - count) * min(1.0, count / 3)) / total
        scores[answer] = round(score, 6)
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])))


def format_ofa_refs(answer_conf: dict[str, float]) -> str:
    """{'yes': 1.0, 'no': 0.3} -> '1.0|!+yes&&0.3|!+no' (highest confidence first), OFA's VQA TSV column."""
    items = sorted(answer_conf.items(), key=lambda kv: (-kv[1], kv[0]))
    return OFA_REFS_ITEM_SEP.join(f"{round(conf, 4)!r}{OFA_REFS_CONF_SEP}{answer}" for answer, conf in items)


def parse_ofa_refs(text: str) -> dict[str, float]:
    """'1.0|!+yes&&0.3|!+no' -> {'yes': 1.0, 'no': 0.3}; malformed items are a `BadSample`."""
    result: dict[str, float] = {}
    for item in text.strip().split(OFA_REFS_ITEM_SEP):
        conf, sep, answer = item.partition(OFA_REFS_CONF_SEP)
        answer = answer.strip()
        try:
            value = float(conf)
        except ValueError:
            value = float("nan")
        if not sep or not answer or not (0.0 <= value <= 1.0):
            raise BadSample(f"bad answers: {item!r} is not 'conf|!+answer'")
        result[answer] = max(value, result.get(answer, 0.0))
    if not result:
        raise BadSample("bad answers: empty refs")
    return result
