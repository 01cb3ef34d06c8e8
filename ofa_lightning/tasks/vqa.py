"""Visual question answering (OFA ``vqa_gen``, VQAv2).

Fine-tuning (``mode=finetune``, OFA's ``--prompt-type prev_output``):

* source ``" {question}"`` — :func:`~ofa_lightning.tasks.text.pre_question` (128 words), ``?`` appended when
  missing, plus ``" object: {o1 o2 ...}"`` (≤ 30 tags) with ``add_object`` and an ``objects`` field;
* answer = the highest-confidence answer of ``answer_conf`` / ``ofa_refs`` / ``answers`` (first on ties), the
  loss weight = its confidence;
* decoder input = ``[BOS] + question tokens`` (the source without EOS) ``+ answer tokens``; target = the same
  shifted by one with every question position PAD, so the loss covers ``" {answer}" + EOS`` only
  (``Example.decoder_prompt`` = BOS + question);
* with ``candidates`` (a list or a file, e.g. the recipe's ``answers.json``; OFA's closed set has 3129 answers)
  the example carries ``constraint="trie"`` (OFA's constrained training: logits outside the candidate trie are
  masked; training samples whose answer is not a candidate are skipped), and evaluation ranks every candidate
  (``inference="candidates"``, OFA's all-candidate protocol) unless ``inference: generate`` (beam 5,
  unnormalised scores, question forced as prefix, trie-constrained).

Pre-training (``mode=pretrain``): OFA's 384² augmented crop, source ``" {question}"`` without the added ``?``,
plain decoder input ``[BOS] + answer`` (``prompt_type=none``).

``meta["reference"]`` = the ``{answer: confidence}`` dict (OFA's soft VQA score); the prediction is the answer
string.
"""

from __future__ import annotations

from typing import Any

from .base import Example, SkipSample
from .common import ImageTask, answer_confidences, best_answer
from .registry import register_task
from .text import pre_question

__all__ = ["VQATask"]


@register_task(aliases=("vqa_gen",))
class VQATask(ImageTask):
    name = "vqa"
    # OFA has no VQA instruction: the question is the source, in English and with OFA-CN's vocabulary alike
    prompts = {"en": " {question}", "zh": " {question}"}
    text_fields = ("question", "answers")
    metrics = ("vqa_acc",)
    # beam search: question as forced prefix, trie over the candidate answers
    decoding = {"beam_size": 5, "normalize_scores": False, "temperature": 1.0}
    decoding_presets = {
        "vqa_beam": decoding,
        # zero-shot VQA on a pretrained checkpoint (evaluate_vqa_zeroshot.sh)
        "vqa_zero_shot": {"beam_size": 20, "normalize_scores": False, "zero_shot": True},
    }
    inference = "candidates"
    defaults = {
        "max_src_words": 128,
        "question_mark": True,  # append "?" when missing (fine-tuning)
        "add_object": False,
        "max_object_words": 30,
        "objects_field": "objects",  # list of tags, or OFA's "a&&b&&c"
        "prompt_type": "prev_output",
        "candidates": None,
        "constrained_training": True,
        "inference": "candidates",  # or "generate" (beam search)
    }
    mode_defaults = {
        "finetune": {},
        "pretrain": {"image_size": 384, "sample_patch_num": 196, "question_mark": False, "prompt_type": "none"},
    }

    def __init__(self, tokenizer, **options: Any):
        super().__init__(tokenizer, **options)
        self.set_candidates(self.cfg["candidates"])
        if self.cfg["inference"] not in ("candidates", "generate"):
            raise ValueError(f"vqa: inference must be 'candidates' or 'generate', got {self.cfg['inference']!r}")
        self.inference = self.cfg["inference"] if self.candidates is not None else "generate"
        self._candidate_set = set(self.candidates or ())

    def question_text(self, sample) -> str:
        question = pre_question(self.text(sample, "question"), self.cfg["max_src_words"])
        if self.cfg["question_mark"] and not question.endswith("?"):
            question += "?"
        if not question.strip("? "):
            raise SkipSample("empty text", "question", "nothing left after cleaning")
        text = self.prompt.format(question=question)
        if self.cfg["add_object"]:
            objects = sample.get(self.cfg["objects_field"])
            if isinstance(objects, str):
                objects = [o for o in objects.strip().split("&&") if o]
            if isinstance(objects, (list, tuple)) and objects:
                if not all(isinstance(o, str) for o in objects):
                    raise SkipSample("bad type", self.cfg["objects_field"], "expected a list of strings")
                text += " object: {}".format(" ".join(objects[: self.cfg["max_object_words"]]))
        return text

    def _build(self, sample, image, train, rng) -> Example:
        img = self.require_image(image)
        tensor, _ = self.transform(img, train, rng)
        source = self.wrap_source(self.encode(self.question_text(sample)))
        conf = answer_confidences(self, sample)
        constrained = self.candidates is not None and self.cfg["constrained_training"]
        if conf:
            answer, weight = best_answer(conf)
            if train and constrained and answer not in self._candidate_set:
                raise SkipSample("answer not in candidates", "answer_conf", answer)
        elif train:
            raise SkipSample("missing field", "answer_conf", "no answers to train on")
        else:
            answer, weight = "", 1.0  # unlabelled evaluation split: decode only
        if train and weight <= 0:
            raise SkipSample("bad value", "answer_conf", "zero confidence")
        answer_ids = self.encode(f" {answer}") if answer else []
        prev, target, prompt = self.teacher_forcing(source, answer_ids, self.cfg["prompt_type"])
        meta = {"reference": conf or None, "answer": answer}  # None: unlabelled row, no metric
        for key in ("question_id", "image_id", "answers"):
            if key in sample:
                meta[key] = sample[key]
        return self.make_example(
            sample,
            source,
            prev,
            target,
            image=tensor,
            weight=self.weight * weight,
            constraint="trie" if constrained else None,
            meta=meta,
            decoder_prompt=prompt,
        )

    def instruction(self, text: str | None = None) -> str:
        return self.question_text({"question": text or ""})

    def parse_prediction(self, tokens, example: Example | None = None) -> str:
        return self.decode_text(tokens)
