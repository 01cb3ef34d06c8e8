"""Pieces shared by the image tasks: option defaults, OFA's image pipelines, answer-confidence parsing.

Image pipelines (``mode`` option of the image tasks)
----------------------------------------------------
``finetune``  every split: ``SquashResize(image_size)`` (bicubic, aspect ratio not kept; OFA's fine-tuning
              ``Resize((s, s))``, and RefCOCO's 512² squash) → ToTensor → Normalize.
``pretrain``  training: ``RandomResize(range(image_size, 481), max_size=672)`` → ``CenterCrop(image_size)`` →
              ``RandomAugment(2, 7)`` → ToTensor → Normalize (OFA's image-text rows; grounding rows use
              ``ObjectCenterCrop`` and no RandomAugment); evaluation: the fine-tuning squash.
``normalization``: ``ofa`` (mean = std = 0.5) or ``imagenet``.
``sample_patch_num``: OFA's pre-training patch sampling (196 of the patches of image-text rows); carried as an
option for the model/collate (``task.cfg["sample_patch_num"]``); None = all patches.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from ofa_lightning.images import (
    CenterCrop,
    Compose,
    Normalize,
    ObjectCenterCrop,
    RandomAugment,
    RandomResize,
    SquashResize,
    ToTensor,
)

from .base import SkipSample, Task

__all__ = ["ImageTask", "pick_one", "answer_confidences", "pretrain_scales", "PRETRAIN_MAX_SIZE"]

#: OFA pre-training: RandomResize short side in [image_size, 480], each side capped at 672
PRETRAIN_MAX_SCALE = 480
PRETRAIN_MAX_SIZE = 672


def pretrain_scales(image_size: int) -> list[int]:
    """OFA's ``np.arange(patch_image_size, 481)``: the short sides RandomResize picks from."""
    return list(range(int(image_size), PRETRAIN_MAX_SCALE + 1)) or [int(image_size)]


def pick_one(items: Sequence[str], train: bool, rng: random.Random) -> str:
    """Training: a uniformly random item (one rng draw, even for a single item); evaluation: the first."""
    return rng.choice(list(items)) if train else items[0]


class ImageTask(Task):
    """A task whose encoder input includes an image (see the module doc for the pipelines)."""

    defaults = {
        "mode": "finetune",
        "image_size": 480,
        "normalization": "ofa",
        "sample_patch_num": None,
    }
    mode_defaults = {
        "finetune": {},
        "pretrain": {"image_size": 384, "sample_patch_num": 196},
    }
    #: RandomAugment in the pre-training pipeline (grounding rows have none)
    pretrain_augment: bool = True

    def __init__(self, tokenizer, **options: Any):
        super().__init__(tokenizer, **options)
        self._transforms: dict[bool, Compose] = {}

    # -- pipelines ---------------------------------------------------------------------------------------------------
    def normalize(self) -> Normalize:
        return Normalize.named(self.cfg["normalization"])

    def build_transform(self, train: bool) -> Compose:
        """The Compose for a split; override for task-specific pipelines."""
        size = int(self.cfg["image_size"])
        if self.cfg.get("mode") == "pretrain" and train:
            steps: list = [RandomResize(pretrain_scales(size), max_size=PRETRAIN_MAX_SIZE), CenterCrop(size)]
            if self.pretrain_augment:
                steps.append(RandomAugment(2, 7))
            return Compose([*steps, ToTensor(), self.normalize()])
        return Compose([SquashResize(size), ToTensor(), self.normalize()])

    def transform(self, image: Image.Image, train: bool, rng: random.Random, target: dict[str, Any] | None = None):
        """``(tensor, target)`` for a PIL image through the split's pipeline."""
        if train not in self._transforms:
            self._transforms[train] = self.build_transform(train)
        return self._transforms[train](image, target, rng)


class GroundingImageTask(ImageTask):
    """Image pipelines of the box tasks: RefCOCO's 512² squash (fine-tuning, every split) or OFA's pre-training
    grounding crop (``RandomResize(range(s, 481), 672)`` → ``ObjectCenterCrop(s)``; evaluation squashes)."""

    defaults = {"image_size": 512, "max_image_size": 512, "box_field": "box"}
    mode_defaults = {"finetune": {}, "pretrain": {"image_size": 384, "sample_patch_num": 196}}

    def build_transform(self, train: bool) -> Compose:
        size = int(self.cfg["image_size"])
        if self.cfg.get("mode") == "pretrain" and train:
            return Compose(
                [
                    RandomResize(pretrain_scales(size), max_size=PRETRAIN_MAX_SIZE),
                    ObjectCenterCrop(size),
                    ToTensor(),
                    self.normalize(),
                ]
            )
        return Compose([SquashResize(size), ToTensor(), self.normalize()])

    def image_and_box(self, sample: Mapping[str, Any], image: Image.Image | None, train: bool, rng: random.Random):
        """``(tensor, original box, transformed target)``; the box is validated against the image size."""
        img = self.require_image(image)
        name = self.cfg["box_field"]
        box = self.check_box(self.field(sample, name), name, img.width, img.height)
        tensor, target = self.transform(img, train, rng, {"boxes": [box]})
        if len(target["boxes"]) == 0:
            raise SkipSample("box lost in crop", name)
        return tensor, box, target

    def box_tokens(self, box: Sequence[float]) -> str:
        from ofa_lightning.tokenizer import box_to_tokens

        return box_to_tokens(box, float(self.cfg["max_image_size"]), self.tokenizer.num_bins)


_SOFT_SCORE = {1: 0.3, 2: 0.6, 3: 0.9}


def answer_confidences(task: Task, sample: Mapping[str, Any]) -> dict[str, float]:
    """``{answer: confidence}`` of a VQA-style sample, from (first present) ``answer_conf`` (a dict),
    ``ofa_refs`` (OFA's ``"conf|!+answer&&..."``) or ``answers`` (raw human answers: the standard soft score
    0.3/0.6/0.9/1.0 for 1/2/3/4+ agreeing answers). Empty when none is present; malformed → skip."""
    if sample.get("answer_conf") not in (None, {}):
        conf = task.field(sample, "answer_conf", dict)
        out = {}
        for ans, c in conf.items():
            if not isinstance(ans, str) or isinstance(c, bool) or not isinstance(c, (int, float)):
                raise SkipSample("bad type", "answer_conf", "expected {answer: confidence}")
            if ans.strip():
                out[ans.strip()] = float(c)
        return out
    if sample.get("ofa_refs") not in (None, ""):
        refs = task.field(sample, "ofa_refs", str)
        out = {}
        for item in refs.split("&&"):
            conf, sep, ans = item.partition("|!+")
            try:
                value = float(conf)
            except ValueError:
                raise SkipSample("bad value", "ofa_refs", f"{item!r} is not 'conf|!+answer'") from None
            if not sep or not ans.strip():
                raise SkipSample("bad value", "ofa_refs", f"{item!r} is not 'conf|!+answer'")
            out[ans.strip()] = max(value, out.get(ans.strip(), 0.0))
        return out
    if sample.get("answers") not in (None, []):
        answers = task.field(sample, "answers", (list, tuple))
        counts: dict[str, int] = {}
        for a in answers:
            if not isinstance(a, str):
                raise SkipSample("bad type", "answers", "expected a list of strings")
            a = a.strip().lower()
            if a:
                counts[a] = counts.get(a, 0) + 1
        return {a: _SOFT_SCORE.get(n, 1.0) for a, n in counts.items()}
    return {}


def best_answer(conf: Mapping[str, float]) -> tuple[str, float]:
    """OFA's ``max(ref_dict, key=ref_dict.get)``: the first answer with the highest confidence."""
    answer = max(conf, key=conf.get)
    return answer, float(conf[answer])
