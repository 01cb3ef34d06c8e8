"""Text infilling with BART span masking (OFA pre-training, pure-text rows).

The text is stripped and lower-cased, encoded as ``BPE(" " + text)``, cut to its first ``max_text_tokens``
(512) tokens and then to the last ``keep_last_tokens`` (256). Masking (:func:`span_mask`, BART's
``add_whole_word_mask`` with OFA's settings): ``ceil(mask_ratio · words)`` words (30 %) are covered by spans
whose lengths are drawn from Poisson(λ=3) until they add up to that budget (the last one trimmed); each
span starts at a random word start (distinct starts), its first token becomes one ``<mask>`` and the rest of
its words are deleted (spans may overlap; a span stops at the end of the text); every 0-length span becomes an
inserted ``<mask>`` instead (``random_ratio`` 0: never a random token). BART/OFA insert at random *token*
positions, which can split a multi-token word; here insertions go to random word boundaries, so every
``<mask>`` stands for a run of zero or more whole words.

Source: ``BPE(' what is the complete text of "') + masked + BPE(' "?')`` — for OFA's BPE exactly OFA's
``prefix[:-2] + masked + prefix[-2:]`` with ``prefix = BPE(' what is the complete text of " "?')``, i.e.
``' what is the complete text of " {masked} "?'``;
target: the unmasked text tokens + EOS. Loss weight 2.0, ``other`` group, no image.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from ofa_lightning.generation import GenerationConfig

from .base import OTHER_GROUP, Example, SkipSample, Task
from .registry import register_task

__all__ = ["TextInfillingTask", "TEXT_INFILLING_PROMPT", "span_mask", "poisson"]

TEXT_INFILLING_PROMPT = ' what is the complete text of " {text} "?'


def poisson(lam: float, rng: random.Random) -> int:
    """One Poisson(λ) draw from ``rng`` (Knuth's product of uniforms)."""
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def span_mask(
    tokens: Sequence[int],
    is_word_start: Sequence[bool],
    mask_id: int,
    rng: random.Random,
    mask_ratio: float = 0.3,
    poisson_lambda: float = 3.0,
) -> list[int]:
    """BART whole-word span masking of a token list (no BOS/EOS); see the module doc.

    ``is_word_start[i]`` marks tokens that begin a word (BPE tokens with a leading space); spans start only there
    and cover whole words. Returns the masked token list.
    """
    tokens = list(tokens)
    n = len(tokens)
    starts = [i for i in range(n) if is_word_start[i]]
    budget = math.ceil(len(starts) * mask_ratio)
    if budget == 0:
        return tokens
    lengths: list[int] = []
    total = 0
    while total < budget:
        length = poisson(poisson_lambda, rng)
        lengths.append(min(length, budget - total))  # trims the last span to the budget
        total += lengths[-1]
    num_inserts = lengths.count(0)
    lengths = [length for length in lengths if length > 0]
    out = list(tokens)
    keep = [True] * n
    span_starts = rng.sample(starts, len(lengths))
    for s in span_starts:
        out[s] = mask_id
    for s, length in zip(span_starts, lengths):
        remaining, j = length - 1, s + 1
        while j < n:
            if is_word_start[j]:
                if remaining == 0:
                    break
                remaining -= 1
            keep[j] = False  # later words of the span (and sub-word tokens) are deleted
            j += 1
    masked = [t for t, k in zip(out, keep) if k]
    if num_inserts:
        # word boundaries of the masked text (a <mask> starts a "word"); the text start is always one
        flags = [is_word_start[i] or out[i] == mask_id for i in range(n) if keep[i]]
        gaps = sorted({0, len(masked), *(i for i, f in enumerate(flags) if f)})
        picks = sorted(rng.choice(gaps) for _ in range(num_inserts))
        result, p = [], 0
        for i in range(len(masked) + 1):
            while p < len(picks) and picks[p] == i:
                result.append(mask_id)
                p += 1
            if i < len(masked):
                result.append(masked[i])
        masked = result
    return masked


@register_task
class TextInfillingTask(Task):
    name = "text_infilling"
    prompts = {"en": TEXT_INFILLING_PROMPT}
    text_fields = ("text",)
    decoding = {"beam_size": 5}
    group = OTHER_GROUP
    default_weight = 2.0
    defaults = {
        "text_field": "text",
        "mask_ratio": 0.3,
        "poisson_lambda": 3.0,
        "max_text_tokens": 512,
        "keep_last_tokens": 256,
    }

    def __init__(self, tokenizer, **options):
        super().__init__(tokenizer, **options)
        self._word_start: dict[int, bool] = {}
        head, tail = self.prompt.split(" {text} ")  # the masked ids go between, each side BPE-encoded apart
        self._head, self._tail = self.encode(head), self.encode(" " + tail)

    def is_word_start(self, token: int) -> bool:
        """OFA/fairseq: specials and non-text literals count as word starts; BPE tokens when they start with a
        space (byte-level ``Ġ``)."""
        ws = self._word_start.get(token)
        if ws is None:
            tok = self.tokenizer
            if token < 4 or token >= tok.mask_id:
                ws = True
            else:
                ws = tok.id_to_token(token).startswith("\u0120") or tok.decode([token]).startswith(" ")
            self._word_start[token] = ws
        return ws

    def _build(self, sample, image, train, rng) -> Example:
        field = self.cfg["text_field"]
        text = self.text(sample, field).strip().lower()
        ids = self.encode(f" {text}")[: int(self.cfg["max_text_tokens"])][-int(self.cfg["keep_last_tokens"]) :]
        if not ids:
            raise SkipSample("empty text", field)
        masked = span_mask(
            ids,
            [self.is_word_start(t) for t in ids],
            self.tokenizer.mask_id,
            rng,
            float(self.cfg["mask_ratio"]),
            float(self.cfg["poisson_lambda"]),
        )
        source = self._head + masked + self._tail
        return self.seq2seq_example(
            sample, source, ids, meta={"reference": self.tokenizer.decode(ids).strip(), "masked": masked}
        )

    def generation_config(self) -> GenerationConfig:
        return self.decoding_config(max_len_b=int(self.cfg["keep_last_tokens"]) + 1)

    def parse_prediction(self, tokens, example: Example | None = None) -> str:
        return self.decode_text(tokens)
