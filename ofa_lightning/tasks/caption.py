"""Image captioning (OFA ``caption`` fine-tuning and the pre-training caption rows).

Source ``" what does the image describe?"``; target ``" {caption}"``.

* ``mode=finetune`` (COCO, default): image squashed to 480², target = one reference with all punctuation
  removed, lower-cased, at most ``max_tgt_words`` (20) words (:func:`~ofa_lightning.tasks.text.clean_caption`).
* ``mode=pretrain``: OFA's pre-training image pipeline (384² crop + RandomAugment), target
  :func:`~ofa_lightning.tasks.text.pre_caption` with 30 words.

Training picks one of the sample's ``captions`` with the rng; evaluation uses the first as target and keeps
them all (punctuation removed, untruncated) as ``meta["reference"]`` for CIDEr/BLEU/ROUGE-L.
Decoding: beam 5, max_len_b 16, no_repeat_ngram 3; the prediction has punctuation stripped (OFA).

``language=zh`` (the default with OFA-CN's vocabulary, ``tokenizer=ofa_bert_cn``): OFA-CN's instruction
``"图片描述了什么内容?"``, OFA-CN's MUGE decoding (beam 8, max_len_b 128, no_repeat_ngram 3) and the Chinese caption
metrics ``cider_zh`` / ``bleu_zh`` / ``rouge_l_zh``.
"""

from __future__ import annotations

from .base import Example, SkipSample
from .common import ImageTask, pick_one
from .registry import register_task
from .text import clean_caption, pre_caption, remove_punctuation

__all__ = ["CaptionTask", "CAPTION_PROMPT", "CAPTION_PROMPT_ZH"]

CAPTION_PROMPT = " what does the image describe?"
CAPTION_PROMPT_ZH = "图片描述了什么内容?"  # OFA-CN (OFA-Sys/OFA data/mm_data/caption_dataset.py, bpe=bert)


@register_task
class CaptionTask(ImageTask):
    name = "caption"
    prompts = {"en": CAPTION_PROMPT, "zh": CAPTION_PROMPT_ZH}
    text_fields = ("captions", "caption")
    metrics = ("cider", "bleu", "rouge_l")
    # COCO captioning, Tiny-Large (run_scripts/caption/evaluate_caption.sh)
    decoding = {"beam_size": 5, "max_len_b": 16, "min_len": 1, "no_repeat_ngram_size": 3}
    decoding_presets = {  # OFA-Huge captioning (evaluate_caption_huge.sh)
        "caption_huge": {
            "beam_size": 10,
            "max_len_b": 16,
            "min_len": 1,
            "no_repeat_ngram_size": 3,
            "temperature": 0.98,
            "len_penalty": 0.98,
        },
        # OFA-CN, MUGE Caption (run_scripts/caption/generate_caption_cn.sh): the decoding of language=zh
        "caption_cn": {"beam_size": 8, "max_len_b": 128, "min_len": 1, "no_repeat_ngram_size": 3},
    }
    #: language=zh scores with OFA-CN's caption tokenisation (one token per CJK character: metrics/chinese.py)
    metrics_zh = ("cider_zh", "bleu_zh", "rouge_l_zh")
    defaults = {
        "max_tgt_words": 20,
        "lowercase": True,
        "captions_field": "captions",  # a list of references (a single string is accepted too)
    }
    mode_defaults = {
        "finetune": {},
        "pretrain": {"image_size": 384, "sample_patch_num": 196, "max_tgt_words": 30},
    }

    def __init__(self, tokenizer, **options):
        super().__init__(tokenizer, **options)
        if self.cfg["language"] == "zh":
            self.metrics = self.metrics_zh

    def generation_config(self):
        if self.cfg["language"] == "zh":
            return self.decoding_config(**self.decoding_presets["caption_cn"])
        return super().generation_config()

    def caption_field(self, sample) -> str:
        name = self.cfg["captions_field"]
        if name not in sample and name == "captions" and "caption" in sample:
            return "caption"
        return name

    def clean_target(self, caption: str) -> str:
        if self.cfg["mode"] == "pretrain":
            return pre_caption(caption, self.cfg["max_tgt_words"])
        return clean_caption(caption, self.cfg["max_tgt_words"], lowercase=self.cfg["lowercase"])

    def _build(self, sample, image, train, rng) -> Example:
        img = self.require_image(image)
        tensor, _ = self.transform(img, train, rng)
        field = self.caption_field(sample)
        captions = self.text_list(sample, field)
        caption = self.clean_target(pick_one(captions, train, rng))
        if not caption:
            raise SkipSample("empty text", field, "nothing left after cleaning")
        refs = [clean_caption(c, None, lowercase=self.cfg["lowercase"]) for c in captions]
        meta = {"reference": refs}
        if "image_id" in sample:
            meta["image_id"] = sample["image_id"]
        return self.seq2seq_example(sample, self.prompt, f" {caption}", image=tensor, meta=meta)

    def parse_prediction(self, tokens, example: Example | None = None) -> str:
        return remove_punctuation(self.decode_text(tokens)).strip()
