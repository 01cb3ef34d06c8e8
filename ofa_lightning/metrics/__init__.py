"""DDP-safe evaluation metrics for OFA tasks (all states are tensors; Java-free by default).

The caption, VQA and grounding metrics equal the official tools (pycocoevalcap with its Java
PTBTokenizer, GT-Vision-Lab's ``vqaEval.py``, OFA's ``eval_refcoco``); docs/metrics.md lists how each
equality is tested.

Each metric class registers itself under its name (``@register_metric``, :mod:`.registry`); tasks name the metrics
they feed (``Task.metrics``).

=============  ===================================  ==========================================
registry name  class                                used for
=============  ===================================  ==========================================
``cider``      :class:`CIDErD`                      captioning (CIDEr-D, pycocoevalcap-equal)
``bleu``       :class:`BLEU`                        captioning (BLEU-1..4)
``rouge_l``    :class:`ROUGEL`                      captioning (ROUGE-L, beta 1.2)
``cider_zh``   :class:`ChineseCIDErD`               Chinese captioning (MUGE; also ``bleu_zh``, ``rouge_l_zh``)
``vqa_acc``    :class:`VQAAccuracy`                 VQA (official 10-answer or OFA soft score)
``grounding``  :class:`GroundingAccuracy`           RefCOCO/+/g Acc@0.5 and mean IoU
``accuracy``   :class:`TextAccuracy`                SNLI-VE, ImageNet, GLUE label strings
``rouge``      :class:`RougeN`                      Gigaword ROUGE-1/2/L
``ocr``        :class:`OCRScores`                   text recognition (exact match, 1 - normalised edit distance)
=============  ===================================  ==========================================
"""

from __future__ import annotations

from .bleu import bleu_corpus, bleu_from_stats, bleu_stats
from .caption import BLEU, ROUGEL, CaptionMetric, CIDErD
from .chinese import ChineseBLEU, ChineseCIDErD, ChineseROUGEL, chinese_caption_tokenize
from .cider import CiderDfTable, cider_d_scores
from .classification import TextAccuracy, normalize_label
from .grounding import GroundingAccuracy, grounding_iou
from .ocr import OCRScores
from .official import official_caption_scores
from .registry import METRICS, build_metric, register_metric
from .rouge_l import rouge_l_scores
from .summarization import RougeN
from .tokenize import ptb_tokenize, ptb_tokenize_lines, simple_tokenize
from .vqa import VQAAccuracy, normalize_vqa_answer, vqa_official_accuracy

__all__ = [
    "METRICS",
    "build_metric",
    "register_metric",
    "BLEU",
    "CIDErD",
    "CaptionMetric",
    "ChineseBLEU",
    "ChineseCIDErD",
    "ChineseROUGEL",
    "chinese_caption_tokenize",
    "CiderDfTable",
    "GroundingAccuracy",
    "OCRScores",
    "ROUGEL",
    "RougeN",
    "TextAccuracy",
    "VQAAccuracy",
    "bleu_corpus",
    "bleu_from_stats",
    "bleu_stats",
    "cider_d_scores",
    "grounding_iou",
    "normalize_label",
    "normalize_vqa_answer",
    "official_caption_scores",
    "ptb_tokenize",
    "ptb_tokenize_lines",
    "rouge_l_scores",
    "simple_tokenize",
    "vqa_official_accuracy",
]
