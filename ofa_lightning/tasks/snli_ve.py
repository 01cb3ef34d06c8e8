"""Visual entailment, SNLI-VE (OFA ``snli_ve``, ``--prompt-type prev_output --add-caption``).

Source with the premise caption (``add_caption``, default):
``' can image and text1 " {premise} " imply text2 " {hypothesis} "?'``; without:
``' does the image describe " {hypothesis} "?'`` (both :func:`~ofa_lightning.tasks.text.pre_caption`, 80 words).
Answer ``" yes"`` (entailment) / ``" no"`` (contradiction) / ``" maybe"`` (neutral). Like VQA: decoder input
``[BOS] + source tokens (no EOS) + answer``, loss on the answer + EOS only, trie over {no, yes, maybe}
(``constraint="trie"``), and evaluation by all-candidate scoring. Image squashed to 480².
"""

from __future__ import annotations

from typing import Any

from .base import Example, SkipSample
from .common import ImageTask
from .registry import register_task
from .text import pre_caption

__all__ = ["SnliVeTask", "SNLI_VE_PROMPT", "SNLI_VE_CAPTION_PROMPT", "SNLI_VE_LABELS"]

SNLI_VE_PROMPT = ' does the image describe " {hypothesis} "?'
SNLI_VE_CAPTION_PROMPT = ' can image and text1 " {premise} " imply text2 " {hypothesis} "?'
SNLI_VE_LABELS = {"entailment": "yes", "contradiction": "no", "neutral": "maybe"}


@register_task
class SnliVeTask(ImageTask):
    name = "snli_ve"
    prompts = {"en": SNLI_VE_PROMPT}
    text_fields = ("hypothesis", "premise")
    metrics = ("accuracy",)
    decoding = {"beam_size": 5, "normalize_scores": False, "max_len_b": 8}
    inference = "candidates"
    defaults = {"max_src_words": 80, "add_caption": True, "prompt_type": "prev_output", "constrained_training": True}

    def __init__(self, tokenizer, **options: Any):
        super().__init__(tokenizer, **options)
        self.set_candidates(["no", "yes", "maybe"])

    def _build(self, sample, image, train, rng) -> Example:
        img = self.require_image(image)
        tensor, _ = self.transform(img, train, rng)
        label = self.text(sample, "label").strip().lower()
        if label in SNLI_VE_LABELS:
            label = SNLI_VE_LABELS[label]
        if label not in ("yes", "no", "maybe"):
            raise SkipSample("bad label", "label", repr(label))
        hypothesis = pre_caption(self.text(sample, "hypothesis"), self.cfg["max_src_words"])
        if not hypothesis:
            raise SkipSample("empty text", "hypothesis", "nothing left after cleaning")
        if self.cfg["add_caption"]:
            premise = pre_caption(self.text(sample, "premise"), self.cfg["max_src_words"])
            prompt = SNLI_VE_CAPTION_PROMPT.format(premise=premise, hypothesis=hypothesis)
        else:
            prompt = self.prompt.format(hypothesis=hypothesis)
        source = self.wrap_source(self.encode(prompt))
        prev, target, decoder_prompt = self.teacher_forcing(source, self.encode(f" {label}"), self.cfg["prompt_type"])
        return self.make_example(
            sample,
            source,
            prev,
            target,
            image=tensor,
            meta={"reference": label},
            decoder_prompt=decoder_prompt,
            constraint="trie" if self.cfg["constrained_training"] else None,
        )

    def parse_prediction(self, tokens, example: Example | None = None) -> str:
        return self.decode_text(tokens)
