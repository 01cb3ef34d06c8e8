"""Chinese caption metrics: BLEU-1..4, ROUGE-L and CIDEr-D over OFA-CN's caption tokenisation (MUGE Caption).

MUGE's leaderboard scores captions on its server and publishes no evaluation script (OFA-Sys/OFA
``run_scripts/caption/generate_caption_cn.sh``: "We do not provide scripts for the evaluation"); its official
baseline (MUGE-2021/image-caption-baseline ``generate.py``, ``txt_post_process``) submits each caption with every
space and WordPiece mark removed, so the segmentation is the scorer's. The one public rule is OFA-CN's own caption
validation (OFA-Sys/OFA ``tasks/mm_tasks/caption.py`` ``_inference`` with ``bpe=bert``): the caption is BERT-tokenised
and decoded by fairseq's ``BertBPE`` (pieces joined by spaces, ``##`` continuations glued, transformers'
``clean_up_tokenization``), ASCII punctuation (``string.punctuation``) is deleted, and the scorers split on spaces.
:func:`chinese_caption_tokenize` is that rule:

* lower-case, accents stripped, control characters dropped (BERT's basic tokenizer);
* **every CJK character is one token**; a run of Latin letters or digits is one token; every punctuation character
  is split off;
* transformers' ``clean_up_tokenization`` on the space-joined tokens (``" ' "`` -> ``"'"``, ``" n't"`` -> ``"n't"``,
  ...), then ASCII punctuation deleted; full-width punctuation (``，。？``) stays a token, as in OFA.

BERT's basic tokenization runs in ``tokenizers`` (``BertNormalizer`` + ``BertPreTokenizer``). The scorers are the
pycocoevalcap-equal ones of :mod:`.caption` (CIDEr-D with document frequencies from the evaluated references).
"""

from __future__ import annotations

import string
from typing import Any

from tokenizers import normalizers, pre_tokenizers

from .caption import BLEU, ROUGEL, CIDErD
from .registry import register_metric

__all__ = ["chinese_caption_tokenize", "ChineseCIDErD", "ChineseBLEU", "ChineseROUGEL"]

_NORMALIZER = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
_PRE_TOKENIZER = pre_tokenizers.BertPreTokenizer()
_ASCII_PUNCTUATION = str.maketrans({c: None for c in string.punctuation})
# transformers' PreTrainedTokenizerBase.clean_up_tokenization (what fairseq's BertBPE.decode applies)
_CLEAN_UP = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


def chinese_caption_tokenize(text: str) -> str:
    """A caption as OFA-CN's caption validation scores it: space-separated tokens (see the module docstring)."""
    words = [w for w, _ in _PRE_TOKENIZER.pre_tokenize_str(_NORMALIZER.normalize_str(text))]
    joined = " ".join(words)
    for old, new in _CLEAN_UP:
        joined = joined.replace(old, new)
    return " ".join(joined.translate(_ASCII_PUNCTUATION).split())


@register_metric("cider_zh")
class ChineseCIDErD(CIDErD):
    """CIDEr-D over :func:`chinese_caption_tokenize` (MUGE Caption, OFA-CN)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("tokenizer", chinese_caption_tokenize)
        super().__init__(**kwargs)


@register_metric("bleu_zh")
class ChineseBLEU(BLEU):
    """BLEU-1..4 over :func:`chinese_caption_tokenize` (MUGE Caption, OFA-CN)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("tokenizer", chinese_caption_tokenize)
        super().__init__(**kwargs)


@register_metric("rouge_l_zh")
class ChineseROUGEL(ROUGEL):
    """ROUGE-L over :func:`chinese_caption_tokenize` (MUGE Caption, OFA-CN)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("tokenizer", chinese_caption_tokenize)
        super().__init__(**kwargs)
