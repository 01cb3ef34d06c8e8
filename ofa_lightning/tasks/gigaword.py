"""Abstractive summarisation, Gigaword (OFA ``gigaword``).

Source ``' what is the summary of article " {article} "?'`` — article
:func:`~ofa_lightning.tasks.text.pre_caption` (``max_src_words`` 512), ``<unk>`` → ``unk``, and the prompt's
BPE cut to its first ``max_src_tokens`` (512) tokens, exactly as OFA (``encode_text(..., length=512)``).
Target ``" {summary}"`` (pre_caption, ``max_tgt_words`` 64, ``<unk>`` → ``unk``) + EOS.
Training adds OFA's target-side noise: each decoder-input token after BOS is, with probability
``noise_ratio`` (0.2), replaced by a random id in ``[4, <code_0>)`` (text tokens and ``<mask>``, as OFA's
``randint(4, len(dict) - codes - bins)``); targets stay clean. Text-only (``other`` group).
``meta["reference"]`` is the raw summary lower-cased (OFA's ``target_str``); decoding: beam 6, lenpen 0.7,
max_len_b 32, no_repeat_ngram 3.
"""

from __future__ import annotations

from .base import OTHER_GROUP, Example, SkipSample, Task
from .registry import register_task
from .text import pre_caption

__all__ = ["GigawordTask", "GIGAWORD_PROMPT"]

GIGAWORD_PROMPT = ' what is the summary of article " {article} "?'


@register_task(aliases=("summarization",))
class GigawordTask(Task):
    name = "gigaword"
    prompts = {"en": GIGAWORD_PROMPT}
    text_fields = ("article", "summary")
    metrics = ("rouge",)
    decoding = {"beam_size": 6, "len_penalty": 0.7, "max_len_b": 32, "no_repeat_ngram_size": 3}
    group = OTHER_GROUP
    defaults = {
        "article_field": "article",
        "summary_field": "summary",
        "max_src_words": 512,
        "max_src_tokens": 512,
        "max_tgt_words": 64,
        "noise_ratio": 0.2,
    }

    def add_noise(self, tokens: list[int], rng) -> list[int]:
        p = float(self.cfg["noise_ratio"])
        if p <= 0:
            return tokens
        hi = self.tokenizer.code_offset
        return [rng.randrange(4, hi) if rng.random() < p else t for t in tokens]

    def _build(self, sample, image, train, rng) -> Example:
        afield, sfield = self.cfg["article_field"], self.cfg["summary_field"]
        article = pre_caption(self.text(sample, afield), self.cfg["max_src_words"]).replace("<unk>", "unk")
        raw_summary = self.text(sample, sfield)
        summary = pre_caption(raw_summary, self.cfg["max_tgt_words"]).replace("<unk>", "unk")
        if not article:
            raise SkipSample("empty text", afield, "nothing left after cleaning")
        if not summary:
            raise SkipSample("empty text", sfield, "nothing left after cleaning")
        src = self.encode(self.prompt.format(article=article))[: int(self.cfg["max_src_tokens"])]
        tgt = self.encode(f" {summary}")
        source = self.wrap_source(src)
        prev, target, prompt = self.teacher_forcing(source, tgt, "none")
        if train:
            prev = prev[:1] + self.add_noise(prev[1:], rng)
        return self.make_example(
            sample, source, prev, target, decoder_prompt=prompt, meta={"reference": raw_summary.lower()}
        )

    def parse_prediction(self, tokens, example: Example | None = None) -> str:
        return self.decode_text(tokens)
