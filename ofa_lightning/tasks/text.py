"""Text cleaning, exactly as OFA's datasets do it (OFA-Sys/OFA ``data/ofa_dataset.py``,
``pre_caption`` / ``pre_question``).

* :func:`pre_caption` / :func:`pre_question` — OFA's ``OFADataset.pre_caption`` / ``pre_question``: lower-case;
  strip *leading* ``,.!?*#:;~``; ``-`` and ``/`` become spaces (captions also turn ``<person>`` into ``person``);
  runs of two or more whitespace characters become one space; trailing newlines and surrounding spaces are
  stripped; then the first ``max_words`` space-separated words are kept.
* :func:`clean_caption` — the COCO caption fine-tuning target: all of ``string.punctuation`` removed, words
  split on any whitespace, first ``max_words`` kept. OFA's caption TSVs are lower-cased already; raw COCO
  captions are not, so lower-casing is on by default here.
* :func:`clean_glue_text` — GLUE sentences: ``' '.join(text.lower().strip().split()[:max_words])``.
* :func:`truncate_words` — whitespace split + first ``max_words`` (text-to-image captions: no other cleaning).
"""

from __future__ import annotations

import re
import string

__all__ = [
    "pre_caption",
    "pre_question",
    "clean_caption",
    "clean_glue_text",
    "remove_punctuation",
    "truncate_words",
    "PUNCTUATION_TABLE",
]

PUNCTUATION_TABLE = str.maketrans({c: None for c in string.punctuation})
_MULTI_SPACE = re.compile(r"\s{2,}")
_LEADING = ",.!?*#:;~"


def _finish(text: str, max_words: int | None) -> str:
    text = _MULTI_SPACE.sub(" ", text)
    text = text.rstrip("\n").strip(" ")
    if max_words is not None:
        words = text.split(" ")
        if len(words) > max_words:
            text = " ".join(words[:max_words])
    return text


def pre_caption(caption: str, max_words: int | None = None) -> str:
    """OFA's ``pre_caption`` (see the module doc). ``max_words=None`` keeps every word."""
    text = caption.lower().lstrip(_LEADING).replace("-", " ").replace("/", " ").replace("<person>", "person")
    return _finish(text, max_words)


def pre_question(question: str, max_words: int | None = None) -> str:
    """OFA's ``pre_question``: :func:`pre_caption` without the ``<person>`` rule."""
    text = question.lower().lstrip(_LEADING).replace("-", " ").replace("/", " ")
    return _finish(text, max_words)


def remove_punctuation(text: str) -> str:
    """Deletes every character of ``string.punctuation`` (OFA's caption ``transtab``)."""
    return text.translate(PUNCTUATION_TABLE)


def truncate_words(text: str, max_words: int | None = None) -> str:
    """Whitespace-split, keep ``max_words`` words, join with single spaces."""
    words = text.split()
    return " ".join(words if max_words is None else words[:max_words])


def clean_caption(text: str, max_words: int | None = None, lowercase: bool = True) -> str:
    """Caption fine-tuning target / reference: punctuation removed, whitespace collapsed, truncated."""
    text = remove_punctuation(text)
    if lowercase:
        text = text.lower()
    return truncate_words(text, max_words)


def clean_glue_text(text: str, max_words: int | None = None) -> str:
    """GLUE sentence cleaning: lower-case, whitespace collapsed, truncated (punctuation kept)."""
    return truncate_words(text.lower().strip(), max_words)
