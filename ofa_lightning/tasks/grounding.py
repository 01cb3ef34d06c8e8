"""Visual grounding / referring expressions (OFA ``refcoco``; RefCOCO, RefCOCO+, RefCOCOg).

Source ``' which region does the text " {expression} " describe?'`` (expression
:func:`~ofa_lightning.tasks.text.pre_caption`, 80 words); target ``<bin_x0> <bin_y0> <bin_x1> <bin_y1>`` + EOS.

* ``mode=finetune`` (default): the image is squashed to 512×512 in every split (OFA's
  ``RandomResize([512], max_size=512)``), the box scaled with it; ``meta`` keeps ``w_ratio = 512 / W`` and
  ``h_ratio = 512 / H``.
* ``mode=pretrain``: OFA's grounding rows, ``RandomResize(384..480, max 672)`` → ``ObjectCenterCrop(384)``.

Bins: ``round(c / max_image_size * (num_bins - 1))`` with ``max_image_size`` 512 (OFA, also for 384 crops).
Prediction: the first 4 generated tokens as bins → ``c = bin / (num_bins - 1) * 512 / ratio`` → a box in pixels
of the *original* image (NaNs when the tokens are not 4 bins: the metric counts it invalid).
Decoding: beam 5, exactly 4 tokens (min_len = max_len_b = 4), no_repeat_ngram 3 (also OFA-CN's RefCOCO-CN,
``run_scripts/refcoco/evaluate_refcoco_cn.sh``). ``language=zh`` (OFA-CN): ``'这段文字" {expression} "描述的是哪个区域？'``.

Option ``prompt_type`` (default ``none``, OFA's RefCOCO): ``prev_output`` also gives the decoder the source as a
forced prefix, as OFA's VQA does; the loss stays on the 4 bins + EOS and evaluation forces the prefix, then decodes
up to ``src_len + 4`` tokens and parses the first 4. The demo uses it: with ``none`` its from-scratch decoder drew the
same box whatever the expression (docs/tutorials/demo.md). ``OFA.load`` reads it from the run's resolved config.
"""

from __future__ import annotations

from typing import Any

from ofa_lightning.generation import GenerationConfig
from ofa_lightning.tokenizer import bins_to_box

from .base import Example, SkipSample, _until_eos
from .common import GroundingImageTask
from .registry import register_task
from .text import pre_caption

__all__ = ["GroundingTask", "GROUNDING_PROMPT", "GROUNDING_PROMPT_ZH", "parse_box_tokens"]

GROUNDING_PROMPT = ' which region does the text " {text} " describe?'
GROUNDING_PROMPT_ZH = '这段文字" {text} "描述的是哪个区域？'  # OFA-CN (data/mm_data/refcoco_dataset.py, bpe=bert)


def parse_box_tokens(task, tokens, w_ratio: float = 1.0, h_ratio: float = 1.0) -> list[float]:
    """First 4 ids → pixel box (NaN box if they are not 4 bin tokens)."""
    tok = task.tokenizer
    ids = _until_eos(tokens, tok.eos_id)[:4]
    lo, hi = tok.bin_range
    if len(ids) < 4 or not all(lo <= i < hi for i in ids):
        return [float("nan")] * 4
    return bins_to_box(tok.ids_to_bins(ids), float(task.cfg["max_image_size"]), tok.num_bins, w_ratio, h_ratio)


@register_task(aliases=("refcoco", "visual_grounding"))
class GroundingTask(GroundingImageTask):
    name = "grounding"
    prompts = {"en": GROUNDING_PROMPT, "zh": GROUNDING_PROMPT_ZH}
    text_fields = ("expression",)
    metrics = ("grounding",)
    # RefCOCO/+/g: exactly 4 bin tokens + EOS
    decoding = {"beam_size": 5, "min_len": 4, "max_len_b": 4, "no_repeat_ngram_size": 3}
    decoding_presets = {"refcoco": decoding}
    defaults = {"max_src_words": 80, "expression_field": "expression", "prompt_type": "none"}

    def _build(self, sample, image, train, rng) -> Example:
        tensor, box, target = self.image_and_box(sample, image, train, rng)
        field = self.cfg["expression_field"]
        expression = pre_caption(self.text(sample, field), self.cfg["max_src_words"])
        if not expression:
            raise SkipSample("empty text", field, "nothing left after cleaning")
        img_h, img_w = target["orig_size"]
        meta: dict[str, Any] = {
            "reference": box,
            "w_ratio": target["w_ratio"],
            "h_ratio": target["h_ratio"],
            "image_size": (img_h, img_w),
            "expression": expression,
        }
        for key in ("ref_id", "image_id"):
            if key in sample:
                meta[key] = sample[key]
        return self.seq2seq_example(
            sample,
            self.prompt.format(text=expression),
            self.box_tokens(target["boxes"][0].tolist()),
            image=tensor,
            meta=meta,
            prompt_type=self.cfg["prompt_type"],
        )

    def instruction(self, text: str | None = None) -> str:
        return self.prompt.format(text=pre_caption(text or "", self.cfg["max_src_words"]))

    def generation_config(self) -> GenerationConfig:
        if self.cfg["prompt_type"] != "none":
            # the source is forced as a decoder prefix first: 4 bins + EOS after a prefix of <= src_len tokens
            return self.decoding_config(min_len=0, max_len_a=1)
        return self.decoding_config()

    def parse_prediction(self, tokens, example: Example | None = None) -> list[float]:
        meta = example.meta if example is not None else {}
        return parse_box_tokens(self, tokens, meta.get("w_ratio", 1.0), meta.get("h_ratio", 1.0))
