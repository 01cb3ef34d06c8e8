"""Image-text matching (OFA pre-training, derived from caption rows).

Source ``' does the image describe " {caption} "?'`` (caption :func:`~ofa_lightning.tasks.text.pre_caption`,
80 words); target ``" yes"`` (the sample's own caption) or ``" no"`` (a negative), 50/50 drawn with the rng.

Negatives, in order of preference:

1. with probability ``object_replace_prob`` (0.4, OFA), when the sample lists ``gt_objects`` and an
   ``object_vocab`` is configured: the caption with one of its gt object words replaced by another object;
2. a caption of another image from a small buffer (``buffer_size``) of captions seen earlier by this task
   (OFA draws from a global caption list; a buffer keeps streaming shards self-contained);
3. one of the sample's own ``negative_captions`` when it has them.

When none is available (the first samples of a stream) the example is a positive. Everything is drawn from
the task's rng, so a stream of samples gives the same examples for the same seed.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from .base import Example, SkipSample, load_string_list
from .common import ImageTask, pick_one
from .registry import register_task
from .text import pre_caption

__all__ = ["ImageTextMatchingTask", "MatchingTask", "ITM_PROMPT"]

ITM_PROMPT = ' does the image describe " {text} "?'


class MatchingTask(ImageTask):
    """Shared by the yes/no pre-training tasks: candidates, decoding, parsing."""

    inference = "candidates"
    metrics = ("accuracy",)
    decoding = {"beam_size": 5, "normalize_scores": False, "max_len_b": 8}
    defaults = {"mode": "pretrain", "image_size": 384, "sample_patch_num": 196, "max_src_words": 80, "buffer_size": 64}

    def __init__(self, tokenizer, **options: Any):
        super().__init__(tokenizer, **options)
        self.set_candidates(["yes", "no"])
        self._buffer: deque = deque(maxlen=max(1, int(self.cfg["buffer_size"])))

    def yes_no_example(self, sample, prompt: str, positive: bool, tensor, meta: dict[str, Any]) -> Example:
        label = "yes" if positive else "no"
        meta = dict(meta, reference=label)
        return self.seq2seq_example(sample, prompt, f" {label}", image=tensor, meta=meta)

    def parse_prediction(self, tokens, example: Example | None = None) -> str:
        return self.decode_text(tokens)


@register_task(aliases=("itm",))
class ImageTextMatchingTask(MatchingTask):
    name = "image_text_matching"
    prompts = {"en": ITM_PROMPT}
    text_fields = ("captions", "caption")
    defaults = {
        "captions_field": "captions",
        "objects_field": "gt_objects",  # list of object words, or OFA's "a&&b"
        "object_vocab": None,  # list or file of object names (OFA's object.txt)
        "object_replace_prob": 0.4,
        "positive_prob": 0.5,
    }

    def __init__(self, tokenizer, **options: Any):
        super().__init__(tokenizer, **options)
        self.object_vocab = load_string_list(self.cfg["object_vocab"], "object_vocab")

    def instruction(self, text: str | None = None) -> str:
        return self.prompt.format(text=pre_caption(text or "", self.cfg["max_src_words"]))

    def _image_key(self, sample) -> str:
        return str(sample.get("image_id", sample.get("id", "?")))

    def _replace_object(self, caption: str, objects: list[str], rng) -> str | None:
        present = [o for o in objects if re.search(rf"\b{re.escape(o)}\b", caption)]
        if not present or not self.object_vocab:
            return None
        gt = rng.choice(present)
        others = [o for o in self.object_vocab if o != gt]
        if not others:
            return None
        return re.sub(rf"\b{re.escape(gt)}\b", rng.choice(others), caption, count=1)

    def negative_caption(self, sample, caption: str, rng) -> str | None:
        objects = sample.get(self.cfg["objects_field"])
        if isinstance(objects, str):
            objects = [o for o in objects.split("&&") if o.strip()]
        if isinstance(objects, list) and objects and self.object_vocab:
            if rng.random() < float(self.cfg["object_replace_prob"]):
                replaced = self._replace_object(caption, [o for o in objects if isinstance(o, str)], rng)
                if replaced is not None and replaced != caption:
                    return replaced
        key = self._image_key(sample)
        pool = [c for k, c in self._buffer if k != key and c.strip().lower() != caption.strip().lower()]
        if pool:
            return rng.choice(pool)
        negatives = sample.get("negative_captions")
        if isinstance(negatives, list):
            negatives = [n for n in negatives if isinstance(n, str) and n.strip()]
            if negatives:
                return rng.choice(negatives)
        return None

    def _build(self, sample, image, train, rng) -> Example:
        img = self.require_image(image)
        tensor, _ = self.transform(img, train, rng)
        field = self.cfg["captions_field"]
        if field not in sample and field == "captions" and "caption" in sample:
            field = "caption"
        caption = pick_one(self.text_list(sample, field), train, rng)
        positive = rng.random() < float(self.cfg["positive_prob"])
        text = caption
        if not positive:
            negative = self.negative_caption(sample, caption, rng)
            if negative is None:
                positive = True
            else:
                text = negative
        self._buffer.append((self._image_key(sample), caption))
        text = pre_caption(text, self.cfg["max_src_words"])
        if not text:
            raise SkipSample("empty text", field, "nothing left after cleaning")
        return self.yes_no_example(sample, self.prompt.format(text=text), positive, tensor, {"caption": text})
