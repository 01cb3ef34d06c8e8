"""Image infilling (OFA pre-training, "code mode").

Input: the sample's image (OFA stores 256×256 crops; others are squashed to ``image_size``), normalised, with
the central ``code_image_size``² square (128² → pixels 64..191) set to 0. Source
``" what is the image in the middle part?"``; target the sample's ``codes`` — the VQGAN codes of that central
region, ``(code_image_size / 8)²`` = 256 of them — as ``<code_i>`` tokens + EOS. ``code_mask=True`` puts the
decoder in image-code mode. Loss weight 2.0, ``other`` group. Needs ``codes`` in the sample (vq_codes shards).
Prediction: the generated code numbers (list of ints).
"""

from __future__ import annotations

from typing import Any

from ofa_lightning.generation import GenerationConfig
from ofa_lightning.images import Compose, ImageInfillingMask, SquashResize, ToTensor

from .base import OTHER_GROUP, Example, SkipSample, Task, _until_eos
from .common import ImageTask
from .registry import register_task

__all__ = ["ImageInfillingTask", "IMAGE_INFILLING_PROMPT", "check_codes", "parse_codes"]

IMAGE_INFILLING_PROMPT = " what is the image in the middle part?"


def check_codes(task: Task, sample, name: str, expected: int | None) -> list[int]:
    codes = task.field(sample, name, (list, tuple, str))
    if isinstance(codes, str):  # OFA's space-separated TSV column
        try:
            codes = [int(c) for c in codes.split()]
        except ValueError:
            raise SkipSample("bad codes", name, "not integers") from None
    if any(isinstance(c, bool) or not isinstance(c, int) for c in codes):
        raise SkipSample("bad codes", name, "not integers")
    n = task.tokenizer.num_codes
    if any(not 0 <= c < n for c in codes):
        raise SkipSample("bad codes", name, f"outside [0, {n})")
    if expected is not None and len(codes) != expected:
        raise SkipSample("bad codes", name, f"{len(codes)} codes, expected {expected}")
    return list(codes)


def parse_codes(task: Task, tokens) -> list[int]:
    lo, hi = task.tokenizer.code_range
    return [t - lo for t in _until_eos(tokens, task.tokenizer.eos_id) if lo <= t < hi]


@register_task
class ImageInfillingTask(ImageTask):
    name = "image_infilling"
    prompts = {"en": IMAGE_INFILLING_PROMPT}
    group = OTHER_GROUP
    default_weight = 2.0
    defaults = {
        "mode": "pretrain",
        "image_size": 256,
        "code_image_size": 128,  # side of the masked centre; codes = (code_image_size / 8)^2
        "codes_field": "codes",
        "constrain_codes": False,  # constraint="codes" on the loss (OFA's pre-training does not)
    }
    mode_defaults = {"pretrain": {}, "finetune": {}}

    @property
    def num_codes(self) -> int:
        return (int(self.cfg["code_image_size"]) // 8) ** 2

    def build_transform(self, train: bool) -> Compose:
        return Compose(
            [
                SquashResize(int(self.cfg["image_size"])),
                ToTensor(),
                self.normalize(),
                ImageInfillingMask(int(self.cfg["code_image_size"])),
            ]
        )

    def _build(self, sample, image, train, rng) -> Example:
        img = self.require_image(image)
        codes = check_codes(self, sample, self.cfg["codes_field"], self.num_codes)
        tensor, target = self.transform(img, train, rng)
        meta: dict[str, Any] = {"reference": codes, "infill_region": target["infill_region"]}
        return self.seq2seq_example(
            sample,
            self.prompt,
            self.tokenizer.codes_to_ids(codes),
            image=tensor,
            code_mask=True,
            meta=meta,
            constraint="codes" if self.cfg["constrain_codes"] else None,
        )

    def generation_config(self) -> GenerationConfig:
        n = self.num_codes
        return self.make_generation_config(
            "text_to_image", beam_size=1, min_len=n, max_len_b=n, constraint_range=self.tokenizer.code_range
        )

    def parse_prediction(self, tokens, example: Example | None = None) -> list[int]:
        return parse_codes(self, tokens)
