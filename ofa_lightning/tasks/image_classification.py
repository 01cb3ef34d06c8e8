"""Image classification by generating the class name (OFA ``image_classify``, ImageNet-1K).

Source ``" what does the image describe?"``; target ``" {class name}"`` (the ``label_field`` of the sample,
``class_name`` by default — the recipe also writes ``synset_words``, the whole Caffe synset line). ImageNet
mean/std normalisation. Training images: timm's ``create_transform(is_training=True, color_jitter=0.4,
auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic", re_prob=0.25, re_mode="pixel")`` with OFA's
``RandomAugment(2, 7)`` inserted after timm's RandAugment (``train_augment: timm``; ``randaugment``: squash +
RandomAugment; ``none``: squash only); evaluation: bicubic squash to ``image_size``.
With ``candidates`` (the class names, a list or a file) training is trie-constrained and evaluation ranks
every class (all-candidate scoring).
"""

from __future__ import annotations

from typing import Any

from ofa_lightning.generation import GenerationConfig
from ofa_lightning.images import (
    Compose,
    RandomAugment,
    SquashResize,
    ToTensor,
    WithGlobalSeed,
)

from .base import Example
from .caption import CAPTION_PROMPT
from .common import ImageTask
from .registry import register_task

__all__ = ["ImageClassificationTask"]


@register_task(aliases=("imagenet", "image_classify"))
class ImageClassificationTask(ImageTask):
    name = "image_classification"
    prompts = {"en": CAPTION_PROMPT}
    text_fields = ("class_name",)
    metrics = ("accuracy",)
    decoding = {"beam_size": 5, "normalize_scores": False, "max_len_b": 16}
    inference = "candidates"
    defaults = {
        "normalization": "imagenet",
        "label_field": "class_name",
        "candidates": None,
        "constrained_training": True,
        "train_augment": "timm",
    }

    def __init__(self, tokenizer, **options: Any):
        super().__init__(tokenizer, **options)
        if self.cfg["train_augment"] not in ("timm", "randaugment", "none"):
            raise ValueError("image_classification: train_augment must be 'timm', 'randaugment' or 'none'")
        self.set_candidates(self.cfg["candidates"])
        self.inference = "candidates" if self.candidates is not None else "generate"

    def build_transform(self, train: bool) -> Compose:
        size = int(self.cfg["image_size"])
        if not train or self.cfg["train_augment"] == "none":
            return Compose([SquashResize(size), ToTensor(), self.normalize()])
        if self.cfg["train_augment"] == "randaugment":
            return Compose([SquashResize(size), RandomAugment(2, 7), ToTensor(), self.normalize()])
        from timm.data import create_transform
        from torchvision import transforms as tvt

        mean, std = self.normalize().mean, self.normalize().std
        timm_tf = create_transform(
            input_size=size,
            is_training=True,
            color_jitter=0.4,
            auto_augment="rand-m9-mstd0.5-inc1",
            interpolation="bicubic",
            re_prob=0.25,
            re_mode="pixel",
            re_count=1,
            mean=tuple(mean),
            std=tuple(std),
        )
        steps = list(timm_tf.transforms)
        # OFA: [crop, flip] + [timm RandAugment] + [RandomAugment(2, 7)] + [to tensor, normalise, erasing]
        split = next((i for i, t in enumerate(steps) if "Tensor" in type(t).__name__), len(steps))
        return Compose(
            [
                WithGlobalSeed(tvt.Compose(steps[:split])),
                RandomAugment(2, 7),
                WithGlobalSeed(tvt.Compose(steps[split:])),
            ]
        )

    def _build(self, sample, image, train, rng) -> Example:
        img = self.require_image(image)
        tensor, _ = self.transform(img, train, rng)
        field = self.cfg["label_field"]
        label = " ".join(self.text(sample, field).split())
        constrained = self.candidates is not None and self.cfg["constrained_training"]
        meta = {"reference": label}
        if "label" in sample:
            meta["label_index"] = sample["label"]
        return self.seq2seq_example(
            sample, self.prompt, f" {label}", image=tensor, meta=meta, constraint="trie" if constrained else None
        )

    def generation_config(self) -> GenerationConfig:
        return self.make_generation_config("vqa", max_len_b=16)

    def parse_prediction(self, tokens, example: Example | None = None) -> str:
        return self.decode_text(tokens)
