"""Question-answer matching (OFA pre-training, derived from QA rows).

Source ``' what is the answer to question " {question} ". is " {answer} "?'`` (question
:func:`~ofa_lightning.tasks.text.pre_question`, 80 words; answer = the highest-confidence one); target
``" yes"`` for the true answer, ``" no"`` for a negative, 50/50 with the rng.

Negative answer (after OFA's ``get_negative_answer``): with probability ``conf - 0.1`` (the more certain the
answer, the more often) one of the same answer type — for a numeric answer to a "how many" question, half of
those times ``answer ± 1`` — else any other answer. Answer types come from the sample's ``answer_type`` (VQAv2:
yes/no, number, other) and the pools from the ``type2ans`` option (``{type: [answers]}`` or a JSON file, OFA's
``type2ans.json``); without it, from a buffer of answers this task has seen, grouped by type. The sample's own
answers are never drawn as negatives; with no negative available the example is a positive.
"""

from __future__ import annotations

import json
import os
from collections import deque
from typing import Any

from .base import Example, SkipSample
from .common import answer_confidences, best_answer
from .image_text_matching import MatchingTask
from .registry import register_task
from .text import pre_question

__all__ = ["QAMatchingTask", "QA_MATCHING_PROMPT"]

QA_MATCHING_PROMPT = ' what is the answer to question " {question} ". is " {answer} "?'


@register_task
class QAMatchingTask(MatchingTask):
    name = "qa_matching"
    prompts = {"en": QA_MATCHING_PROMPT}
    text_fields = ("question", "answers")
    defaults = {"type2ans": None, "positive_prob": 0.5}

    def __init__(self, tokenizer, **options: Any):
        super().__init__(tokenizer, **options)
        t2a = self.cfg["type2ans"]
        if isinstance(t2a, (str, os.PathLike)):
            with open(t2a, encoding="utf-8") as f:
                t2a = json.load(f)
        if t2a is not None and not (isinstance(t2a, dict) and all(isinstance(v, list) for v in t2a.values())):
            raise ValueError("qa_matching: type2ans must map answer types to lists of answers")
        self.type2ans: dict[str, list[str]] | None = t2a
        self._seen: dict[str, deque] = {}  # answer type -> recent answers (plain dict: tasks get pickled)

    def _pool(self, answer_type: str | None) -> list[str]:
        if self.type2ans is not None:
            if answer_type is None:
                return [a for answers in self.type2ans.values() for a in answers]
            return list(self.type2ans.get(answer_type, ()))
        if answer_type is None:
            return list(dict.fromkeys(a for q in self._seen.values() for a in q))
        return list(dict.fromkeys(self._seen.get(answer_type, ())))

    def negative_answer(
        self, question: str, answer: str, conf: float, answer_type: str | None, own: set[str], rng
    ) -> str | None:
        prob = rng.random()
        if conf > prob + 0.1 and answer_type is not None:
            if question.startswith("how many") and answer.isdigit() and prob > 0.5:
                n = int(answer)
                return str(n + rng.choice([-1, 1])) if n != 0 else "1"
            pool = [a for a in self._pool(answer_type) if a not in own]
            if pool:
                return rng.choice(pool)
        pool = [a for a in self._pool("other") or self._pool(None) if a not in own]
        return rng.choice(pool) if pool else None

    def _build(self, sample, image, train, rng) -> Example:
        img = self.require_image(image)
        tensor, _ = self.transform(img, train, rng)
        question = pre_question(self.text(sample, "question"), self.cfg["max_src_words"])
        if not question:
            raise SkipSample("empty text", "question", "nothing left after cleaning")
        conf = answer_confidences(self, sample)
        if not conf:
            raise SkipSample("missing field", "answer_conf", "no answers")
        answer, confidence = best_answer(conf)
        answer_type = sample.get("answer_type") if isinstance(sample.get("answer_type"), str) else None
        positive = rng.random() < float(self.cfg["positive_prob"])
        shown = answer
        if not positive:
            negative = self.negative_answer(question, answer, confidence, answer_type, set(conf), rng)
            if negative is None:
                positive = True
            else:
                shown = negative
        key = answer_type or "other"
        if key not in self._seen:
            self._seen[key] = deque(maxlen=max(1, int(self.cfg["buffer_size"])))
        self._seen[key].append(answer)
        return self.yes_no_example(
            sample,
            self.prompt.format(question=question, answer=shown),
            positive,
            tensor,
            {"question": question, "answer": shown},
        )
