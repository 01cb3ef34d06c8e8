"""Object detection as sequence generation (OFA pre-training detection rows).

Source ``" what are the objects in the image?"``; target, for every box in annotation order,
``<bin_x0> <bin_y0> <bin_x1> <bin_y1>`` followed by BPE(``" {label}"``), all concatenated, + EOS.

Training image pipeline (OFA): ``RandomHorizontalFlip`` → ``LargeScaleJitter(output 256, scale 1.0-1.5)``;
boxes that leave the crop are dropped (with their labels). Evaluation (OFA has none): squash to 256².
Bins use ``max_image_size`` 512 although the image is 256 (OFA's quirk: pre-training bins span ~0-499).
Loss weight 2.0 and the ``other`` group, as OFA's v2 samples. Sample fields: ``boxes`` (``[[x0, y0, x1, y1],
...]`` pixels) and ``labels`` (names, same length).

Prediction: a list of ``{"box": [x0, y0, x1, y1] in original pixels, "label": str}`` parsed from groups of
4 bins followed by label text (incomplete groups are dropped).
"""

from __future__ import annotations

from typing import Any

from ofa_lightning.images import (
    Compose,
    LargeScaleJitter,
    RandomHorizontalFlip,
    SquashResize,
    ToTensor,
)
from ofa_lightning.tokenizer import bins_to_box, box_to_tokens

from .base import OTHER_GROUP, Example, SkipSample, _until_eos
from .common import ImageTask
from .registry import register_task

__all__ = ["DetectionTask", "DETECTION_PROMPT"]

DETECTION_PROMPT = " what are the objects in the image?"


@register_task
class DetectionTask(ImageTask):
    name = "detection"
    prompts = {"en": DETECTION_PROMPT}
    text_fields = ("labels",)
    decoding = {"beam_size": 5, "max_len_b": 200, "min_len": 1}
    group = OTHER_GROUP
    default_weight = 2.0
    defaults = {
        "mode": "pretrain",
        "image_size": 256,  # LargeScaleJitter output (OFA: code_image_size * 2)
        "max_image_size": 512,
        "scale_min": 1.0,
        "scale_max": 1.5,
        "hflip_prob": 0.5,
        "lowercase_labels": True,
        "max_objects": None,  # keep at most this many boxes (annotation order); None = all
    }
    mode_defaults = {"pretrain": {}, "finetune": {}}

    def build_transform(self, train: bool) -> Compose:
        size = int(self.cfg["image_size"])
        if train:
            return Compose(
                [
                    RandomHorizontalFlip(self.cfg["hflip_prob"]),
                    LargeScaleJitter(size, self.cfg["scale_min"], self.cfg["scale_max"]),
                    ToTensor(),
                    self.normalize(),
                ]
            )
        return Compose([SquashResize(size), ToTensor(), self.normalize()])

    def _build(self, sample, image, train, rng) -> Example:
        img = self.require_image(image)
        boxes = self.field(sample, "boxes", (list, tuple))
        labels = self.field(sample, "labels", (list, tuple))
        if len(boxes) != len(labels):
            raise SkipSample("bad value", "labels", f"{len(labels)} labels for {len(boxes)} boxes")
        if not boxes:
            raise SkipSample("empty", "boxes")
        checked = [self.check_box(b, f"boxes.{i}", img.width, img.height) for i, b in enumerate(boxes)]
        names = []
        for i, label in enumerate(labels):
            if not isinstance(label, str) or not label.strip():
                raise SkipSample("bad type" if not isinstance(label, str) else "empty text", f"labels.{i}")
            label = " ".join(label.split())
            names.append(label.lower() if self.cfg["lowercase_labels"] else label)
        if self.cfg["max_objects"] is not None:
            checked, names = checked[: self.cfg["max_objects"]], names[: self.cfg["max_objects"]]
        tensor, target = self.transform(img, train, rng, {"boxes": checked, "labels": names})
        max_size, nb = float(self.cfg["max_image_size"]), self.tokenizer.num_bins
        parts = [
            f"{box_to_tokens(b, max_size, nb)} {label}" for b, label in zip(target["boxes"].tolist(), target["labels"])
        ]
        meta: dict[str, Any] = {
            "reference": [{"box": b, "label": n} for b, n in zip(checked, names)],
            "w_ratio": target["w_ratio"],
            "h_ratio": target["h_ratio"],
        }
        return self.seq2seq_example(sample, self.prompt, " ".join(parts), image=tensor, meta=meta)

    def parse_prediction(self, tokens, example: Example | None = None) -> list[dict[str, Any]]:
        tok = self.tokenizer
        meta = example.meta if example is not None else {}
        w_ratio, h_ratio = meta.get("w_ratio", 1.0), meta.get("h_ratio", 1.0)
        lo, hi = tok.bin_range
        ids = _until_eos(tokens, tok.eos_id)
        objects, i = [], 0
        while i + 4 <= len(ids):
            quad = ids[i : i + 4]
            if not all(lo <= t < hi for t in quad):
                i += 1
                continue
            j = i + 4
            while j < len(ids) and not lo <= ids[j] < hi:
                j += 1
            label = tok.decode(ids[i + 4 : j]).strip()
            box = bins_to_box(tok.ids_to_bins(quad), float(self.cfg["max_image_size"]), tok.num_bins, w_ratio, h_ratio)
            if label:
                objects.append({"box": box, "label": label})
            i = j
        return objects
