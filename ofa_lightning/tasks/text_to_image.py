"""Text-to-image generation as VQGAN code prediction (OFA ``image_gen``).

No image input. Source ``" what is the complete image? caption: {caption}"`` (the caption's first
``max_src_words`` = 64 whitespace-separated words, no other cleaning, as OFA — lower-cased by default since
OFA's TSV captions are lower case and raw COCO captions are not); target the sample's ``codes``
(``(code_image_size / 8)²`` = 1024 for 256² images) as ``<code_i>`` tokens + EOS, ``code_mask=True`` (decoder
in code mode), ``constraint="codes"`` (OFA's ``--constraint-range``: logits outside the code range are masked in
training and generation). Codes are optional in evaluation (the target is then just EOS). Option
``code_input_noise`` (training only, default 0 = OFA): see :meth:`TextToImageTask.corrupt_input_codes`.
Decoding: sampling, 24 samples per caption, top-k 256, exactly 1024 codes from the code range; prediction =
the list of code numbers of the best-scoring sample. With the option ``vq_path`` (a VQ checkpoint,
``ofa_lightning.vq``), :meth:`TextToImageTask.postprocess_predictions` decodes every prediction into an image and
adds it (uint8 array) and the caption to the evaluation record, so the prediction tables show generated images
with their captions. CLIP re-ranking of the N samples is the inference path's (``ofa_lightning.generation.rerank``,
``OFA.generate_image``, ``ofa-predict``).
"""

from __future__ import annotations

from typing import Any

from ofa_lightning.generation import GenerationConfig
from ofa_lightning.generation.constraints import OFA_CODE_RANGE

from .base import OTHER_GROUP, Example, SkipSample, Task
from .image_infilling import check_codes, parse_codes
from .registry import register_task
from .text import truncate_words

__all__ = ["TextToImageTask", "TEXT_TO_IMAGE_PROMPT"]

TEXT_TO_IMAGE_PROMPT = " what is the complete image? caption: {caption}"


@register_task(aliases=("image_gen",))
class TextToImageTask(Task):
    name = "text_to_image"
    prompts = {"en": TEXT_TO_IMAGE_PROMPT}
    text_fields = ("caption",)
    # 24 samples of 32x32=1024 VQGAN codes, top-k 256, codes only
    decoding = {
        "strategy": "sampling",
        "beam_size": 24,
        "sampling_topk": 256,
        "temperature": 1.0,
        "min_len": 1024,
        "max_len_b": 1024,
        "constraint_range": OFA_CODE_RANGE,
        "gen_code": True,
        "seed": 42,
    }
    metrics = ()
    group = OTHER_GROUP
    defaults = {
        "caption_field": "caption",
        "codes_field": "codes",
        "max_src_words": 64,
        "code_image_size": 256,
        "lowercase": True,
        "vq_path": None,  # VQ checkpoint: evaluation decodes the predicted codes into images
        "code_input_noise": 0.0,  # training only: share of teacher-forced input codes made random (OFA: 0)
    }

    def __init__(self, tokenizer, **options: Any):
        super().__init__(tokenizer, **options)
        self.code_input_noise = float(self.cfg.get("code_input_noise") or 0.0)
        if not 0.0 <= self.code_input_noise <= 1.0:
            raise ValueError(f"text_to_image option code_input_noise must be in [0, 1], got {self.code_input_noise}")

    @property
    def num_codes(self) -> int:
        return (int(self.cfg["code_image_size"]) // 8) ** 2

    def _build(self, sample, image, train, rng) -> Example:
        field = self.cfg["caption_field"]
        caption = truncate_words(self.text(sample, field), self.cfg["max_src_words"])
        if self.cfg["lowercase"]:
            caption = caption.lower()
        if not caption:
            raise SkipSample("empty text", field)
        cfield = self.cfg["codes_field"]
        if train or sample.get(cfield) is not None:
            codes = check_codes(self, sample, cfield, self.num_codes)
        else:
            codes = []
        meta: dict[str, Any] = {"reference": codes or None, "caption": caption}
        example = self.seq2seq_example(
            sample,
            self.prompt.format(caption=caption),
            self.tokenizer.codes_to_ids(codes),
            code_mask=True,
            constraint="codes",
            meta=meta,
        )
        if train and self.code_input_noise > 0:
            self.corrupt_input_codes(example, self.code_input_noise, rng)
        return example

    def caption_text(self, text: str) -> str:
        """A user's caption as training writes it (first ``max_src_words`` words, lower case)."""
        caption = truncate_words(text, self.cfg["max_src_words"])
        return caption.lower() if self.cfg["lowercase"] else caption

    def instruction(self, text: str | None = None) -> str:
        return self.prompt.format(caption=self.caption_text(text or ""))

    def corrupt_input_codes(self, example: Example, share: float, rng) -> None:
        """Replace each teacher-forced input code (``prev_output`` after BOS; the targets stay) with a random code
        with probability ``share``. A deviation from OFA (off by default), in the spirit of word dropout (Bowman et
        al., 2016): under teacher forcing the next code is mostly predictable from the previous ones (a shape's
        colour from its first code), so a briefly trained decoder learns to ignore the caption; noisy inputs make
        the caption the reliable source. ``conf/experiment/text_to_image_shapes.yaml`` uses it."""
        lo, hi = self.tokenizer.code_range
        prev = example.prev_output
        for i in range(1, len(prev)):
            if lo <= prev[i] < hi and rng.random() < share:
                prev[i] = rng.randrange(lo, hi)

    def generation_config(self) -> GenerationConfig:
        n = self.num_codes
        return self.decoding_config(min_len=n, max_len_b=n, constraint_range=self.tokenizer.code_range)

    def parse_prediction(self, tokens, example: Example | None = None) -> list[int]:
        return parse_codes(self, tokens)

    # -- images -------------------------------------------------------------------------------------------------------
    def vq(self):
        """The VQ model of the ``vq_path`` option (loaded once), or None."""
        path = self.cfg.get("vq_path")
        if not path:
            return None
        if getattr(self, "_vq", None) is None or self._vq_path != path:
            from ofa_lightning.vq import VQModel

            self._vq, self._vq_path = VQModel.load(path), path
        return self._vq

    def postprocess_predictions(self, records: list[dict[str, Any]], batch: Any) -> list[dict[str, Any]]:
        """Adds ``prompt`` (the caption) and, with a VQ model, ``image`` (H, W, 3 uint8) to evaluation records (row
        order = the batch's); predictions whose codes the VQ cannot decode get no image."""
        import numpy as np

        metas = (batch.get("metas") if hasattr(batch, "get") else None) or [{}] * len(records)
        vq = self.vq()
        for record, meta in zip(records, metas):
            caption = (meta or {}).get("caption")
            if caption is not None:
                record.setdefault("prompt", caption)
            codes = record.get("prediction") or []
            if vq is not None and len(codes) == self.num_codes and max(codes) < vq.n_embed:
                record["image"] = np.asarray(vq.decode_to_pil(codes)[0])
        return records
