"""GLUE as prompted single-token classification (OFA ``cola``/``sst2``/``mrpc``/``qqp``/``mnli``/``qnli``/``rte``,
``--prompt-type src``).

Prompts (sentences lower-cased, whitespace collapsed, ``max_src_words`` words each):

======  ==========================================================================  ========================
task    source                                                                      labels → answer word
======  ==========================================================================  ========================
cola    `` is the text " {s} " grammatically correct?``                             acceptable yes / no
sst2    `` is the sentiment of text " {s} " positive or negative?``                 positive / negative
mrpc    `` does text1 " {s1} " and text2 " {s2} " have the same semantics?``         equivalent yes / no
qqp     `` is question " {s1} " and question " {s2} " equivalent?``                  duplicate yes / no
mnli    `` can text1 " {s1} " imply text2 " {s2} "?``                                yes / maybe / no
rte     `` can text1 " {s1} " imply text2 " {s2} "?``                                entailment yes / no
qnli    `` does " {sentence} " contain the answer to question " {question} "?``      entailment yes / no
======  ==========================================================================  ========================

(QNLI samples hold the question in ``sentence1`` and the context sentence in ``sentence2``, as the recipe
writes them.) Decoder input = the **full source** ``[BOS] ... [EOS]``; target = PAD everywhere except the last
position, which holds the single label token (no EOS); ``decoder_prompt`` = the source. Evaluation: one
teacher-forced pass, argmax over the task's label tokens at the last position (``inference="last_token"``).
The subtask comes from the ``subtask`` option or the sample's ``task`` field; labels may be the recipe's
names (acceptable, entailment, ...) or the answer words themselves.
"""

from __future__ import annotations

from typing import Any

from .base import OTHER_GROUP, Example, SkipSample, Task, _until_eos
from .registry import register_task
from .text import clean_glue_text

__all__ = ["GlueTask", "GLUE_PROMPTS", "GLUE_LABELS"]

GLUE_PROMPTS = {
    "cola": ' is the text " {0} " grammatically correct?',
    "sst2": ' is the sentiment of text " {0} " positive or negative?',
    "mrpc": ' does text1 " {0} " and text2 " {1} " have the same semantics?',
    "qqp": ' is question " {0} " and question " {1} " equivalent?',
    "mnli": ' can text1 " {0} " imply text2 " {1} "?',
    "rte": ' can text1 " {0} " imply text2 " {1} "?',
    "qnli": ' does " {1} " contain the answer to question " {0} "?',
}
#: label name (recipe) -> answer word, per subtask; the answer words map to themselves
GLUE_LABELS = {
    "cola": {"acceptable": "yes", "unacceptable": "no"},
    "sst2": {"positive": "positive", "negative": "negative"},
    "mrpc": {"equivalent": "yes", "not_equivalent": "no"},
    "qqp": {"duplicate": "yes", "not_duplicate": "no"},
    "mnli": {"entailment": "yes", "neutral": "maybe", "contradiction": "no"},
    "rte": {"entailment": "yes", "not_entailment": "no"},
    "qnli": {"entailment": "yes", "not_entailment": "no"},
}
_PAIR = {"mrpc", "qqp", "mnli", "rte", "qnli"}
_ALIASES = {
    "sst-2": "sst2",
    "sst": "sst2",
    "mnli-m": "mnli",
    "mnli-mm": "mnli",
    "mnli_matched": "mnli",
    "mnli_mismatched": "mnli",
}


@register_task
class GlueTask(Task):
    name = "glue"
    text_fields = ("sentence1", "sentence2")
    metrics = ("accuracy",)
    decoding = {"beam_size": 1, "max_len_b": 1, "min_len": 1}
    group = OTHER_GROUP
    inference = "last_token"
    defaults = {"subtask": None, "max_src_words": 512, "constrained_training": True}

    def __init__(self, tokenizer, **options: Any):
        super().__init__(tokenizer, **options)
        self.subtask = self._canonical(self.cfg["subtask"]) if self.cfg["subtask"] is not None else None
        if self.cfg["subtask"] is not None and self.subtask is None:
            raise ValueError(f"glue: unknown subtask {self.cfg['subtask']!r}; known: {', '.join(GLUE_PROMPTS)}")
        self._label_ids: dict[str, int] = {}
        if self.subtask is not None:
            words = self.label_words(self.subtask)
            self.set_candidates(words)
            for w in words:
                self.label_id(w)  # fail early on a tokenizer without single-token labels

    @staticmethod
    def _canonical(name: Any) -> str | None:
        if not isinstance(name, str):
            return None
        key = _ALIASES.get(name.strip().lower(), name.strip().lower())
        return key if key in GLUE_PROMPTS else None

    @staticmethod
    def label_words(subtask: str) -> list[str]:
        return list(dict.fromkeys(GLUE_LABELS[subtask].values()))

    def label_id(self, word: str) -> int:
        if word not in self._label_ids:
            ids = self.encode(f" {word}")
            if len(ids) != 1:
                raise ValueError(
                    f"glue: label word {word!r} is {len(ids)} tokens with this tokenizer; OFA's GLUE "
                    "format needs a single token"
                )
            self._label_ids[word] = ids[0]
        return self._label_ids[word]

    def _build(self, sample, image, train, rng) -> Example:
        if self.subtask is not None:
            subtask = self.subtask
        else:
            raw = self.field(sample, "task", str)
            subtask = self._canonical(raw)
            if subtask is None:
                raise SkipSample("bad value", "task", f"unknown GLUE task {raw!r}")
        n = self.cfg["max_src_words"]
        texts = [clean_glue_text(self.text(sample, "sentence1"), n)]
        if subtask in _PAIR:
            texts.append(clean_glue_text(self.text(sample, "sentence2"), n))
        raw_label = self.field(sample, "label", (str, int), required=train)
        mapping = GLUE_LABELS[subtask]
        word = None
        if raw_label is not None:
            label = str(raw_label).strip().lower()
            word = mapping.get(label, label if label in mapping.values() else None)
            if word is None:
                raise SkipSample("bad label", "label", f"{raw_label!r} for {subtask}")
        source = self.wrap_source(self.encode(GLUE_PROMPTS[subtask].format(*texts)))
        pad = self.tokenizer.pad_id
        # unlabelled evaluation rows (GLUE test files) get an all-PAD target: no loss, prediction only
        target = [pad] * (len(source) - 1) + [self.label_id(word) if word is not None else pad]
        words = self.label_words(subtask)
        meta = {
            "reference": word,
            "subtask": subtask,
            "candidates": words,
            "candidate_ids": [self.label_id(w) for w in words],
        }
        return self.make_example(
            sample,
            source,
            list(source),
            target,
            meta=meta,
            decoder_prompt=list(source),
            constraint="trie" if self.cfg["constrained_training"] else None,
        )

    def parse_prediction(self, tokens, example: Example | None = None) -> str:
        ids = _until_eos(tokens, self.tokenizer.eos_id)[:1]
        return self.tokenizer.decode(ids).strip() if ids else ""
