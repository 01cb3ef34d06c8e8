"""Grounded captioning (OFA pre-training; emitted from every grounding row).

Source ``"  what does the region describe? region:"`` (two leading spaces, as in OFA's code: BPE gives an extra
``Ġ`` token) followed by the region's 4 bin tokens; target ``" {expression}"``
(:func:`~ofa_lightning.tasks.text.pre_caption`, ``max_tgt_words`` 30). Reads grounding samples
(``expression``, ``box``). Image pipeline and bins as :mod:`~ofa_lightning.tasks.grounding`; default
``mode=pretrain`` (384² object-centred crop in training, squash in evaluation).
"""

from __future__ import annotations

from typing import Any

from .base import Example, SkipSample
from .caption import CaptionTask
from .common import GroundingImageTask
from .registry import register_task
from .text import clean_caption, pre_caption, remove_punctuation

__all__ = ["GroundedCaptionTask", "GROUNDED_CAPTION_PROMPT"]

GROUNDED_CAPTION_PROMPT = "  what does the region describe? region: {region}"


@register_task
class GroundedCaptionTask(GroundingImageTask):
    name = "grounded_caption"
    prompts = {"en": GROUNDED_CAPTION_PROMPT}
    text_fields = ("expression",)
    metrics = ("cider", "bleu", "rouge_l")
    decoding = CaptionTask.decoding
    defaults = {
        "mode": "pretrain",
        "image_size": 384,
        "sample_patch_num": 196,
        "max_tgt_words": 30,
        "expression_field": "expression",
    }
    mode_defaults = {
        "finetune": {"image_size": 512, "sample_patch_num": None},
        "pretrain": {"image_size": 384, "sample_patch_num": 196},
    }

    def _build(self, sample, image, train, rng) -> Example:
        tensor, box, target = self.image_and_box(sample, image, train, rng)
        field = self.cfg["expression_field"]
        raw = self.text(sample, field)
        text = pre_caption(raw, self.cfg["max_tgt_words"])
        if not text:
            raise SkipSample("empty text", field, "nothing left after cleaning")
        source = self.prompt.format(region=self.box_tokens(target["boxes"][0].tolist()))
        meta: dict[str, Any] = {"reference": [clean_caption(raw)], "box": box}
        return self.seq2seq_example(sample, source, f" {text}", image=tensor, meta=meta)

    def parse_prediction(self, tokens, example: Example | None = None) -> str:
        return remove_punctuation(self.decode_text(tokens)).strip()
