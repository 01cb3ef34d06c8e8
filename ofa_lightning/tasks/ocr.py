"""Text recognition (OFA ``ocr``; OFA-CN's Chinese OCR fine-tuning): reading a text-line image, as captioning.

Source ``" what are the texts on the image?"``, with OFA-CN's vocabulary (``language=zh``) ``"图片上的文字是什么?"``
(OFA-Sys/OFA ``data/mm_data/ocr_dataset.py``); target ``" {text}"``: the line's text NFKC-normalised and
lower-cased, at most ``max_tgt_length`` characters (``zh``) or words (``en``). OFA also converts traditional to
simplified characters (``zhconv``); this task leaves the text's script as the recipe wrote it.

Image: OFA's ``ocr_resize``: the longer side scaled to ``image_size`` and the shorter by the same factor (at least
64 px), bicubic, then edge-padded to a square at a random offset along the short side (the sample's rng).
Prediction: the decoded text with every space removed (OFA's ``_inference``); metric ``ocr`` (exact-match ``acc``
and ``ned`` = 1 - normalised edit distance). Decoding: beam 5, max_len_b 64, no n-gram blocking
(``run_scripts/ocr/evaluate_ocr_base.sh``).
"""

from __future__ import annotations

import unicodedata
from typing import Any

from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from ofa_lightning.images import Compose, ToTensor
from ofa_lightning.images.base import Transform

from .base import Example, SkipSample
from .common import ImageTask
from .registry import register_task

__all__ = ["OCRTask", "OCR_PROMPT", "OCR_PROMPT_ZH", "OCRResizePad"]

OCR_PROMPT = " what are the texts on the image?"
OCR_PROMPT_ZH = "图片上的文字是什么?"


class OCRResizePad(Transform):
    """OFA's ``ocr_resize`` for a text line: aspect kept, longer side ``size`` (shorter >= 64), edge-padded to a
    ``size`` square at a random offset."""

    def __init__(self, size: int):
        self.size = int(size)

    def apply(self, image: Image.Image, target: dict[str, Any], rng) -> tuple[Image.Image, dict[str, Any]]:
        w, h = image.size
        s = self.size
        if w >= h:
            new_w, new_h = max(64, s), max(64, int(s * h / w))
        else:
            new_w, new_h = max(64, int(s * w / h)), max(64, s)
        new_w, new_h = min(new_w, s), min(new_h, s)
        resized = F.resize(image, [new_h, new_w], interpolation=InterpolationMode.BICUBIC)
        top = rng.randint(0, s - new_h) if w >= h else 0
        left = rng.randint(0, s - new_w) if w < h else 0
        padded = F.pad(resized, [left, top, s - new_w - left, s - new_h - top], padding_mode="edge")
        target = {**target, "size": (s, s), "w_ratio": new_w / w, "h_ratio": new_h / h}
        return padded, target


@register_task
class OCRTask(ImageTask):
    name = "ocr"
    prompts = {"en": OCR_PROMPT, "zh": OCR_PROMPT_ZH}
    text_fields = ("text",)
    metrics = ("ocr",)
    decoding = {"beam_size": 5, "max_len_b": 64, "min_len": 1, "no_repeat_ngram_size": 0}
    defaults = {"image_size": 480, "max_tgt_length": 30, "text_field": "text"}
    mode_defaults = {"finetune": {}}

    def build_transform(self, train: bool) -> Compose:
        return Compose([OCRResizePad(int(self.cfg["image_size"])), ToTensor(), self.normalize()])

    def clean_target(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text).lower().strip()
        if self.cfg["language"] == "zh":
            return text[: self.cfg["max_tgt_length"]]
        return " ".join(text.split()[: self.cfg["max_tgt_length"]])

    def _build(self, sample, image, train, rng) -> Example:
        tensor, _ = self.transform(self.require_image(image), train, rng)
        field = self.cfg["text_field"]
        text = self.clean_target(self.text(sample, field))
        if not text:
            raise SkipSample("empty text", field, "nothing left after cleaning")
        meta: dict[str, Any] = {"reference": [text]}
        if "image_id" in sample:
            meta["image_id"] = sample["image_id"]
        return self.seq2seq_example(sample, self.prompt, f" {text}", image=tensor, meta=meta)

    def parse_prediction(self, tokens, example: Example | None = None) -> str:
        return "".join(self.decode_text(tokens).split())

    def row_score(self, prediction: Any, reference: Any) -> float | None:
        ref = reference[0] if isinstance(reference, list) else reference
        return float(prediction == "".join(str(ref).split()))
