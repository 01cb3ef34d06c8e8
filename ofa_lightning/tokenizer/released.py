"""OFA's released vocabularies, and which one a checkpoint was trained with.

OFA's English checkpoints use GPT-2 BPE (``bpe=gpt2``, ``utils/BPE``: 59,457 ids with codes and bins); OFA-CN's use
BERT's Chinese WordPiece (``bpe=bert``, ``utils/BERT_CN_dict``: 30,325 ids). A fairseq checkpoint records its
``bpe``; a HF/ModelScope state dict only has its vocabulary size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# tokenizer config name -> (vocabulary size with 8,192 codes and 1,000 bins, what it is)
RELEASED_VOCABULARIES = {
    "ofa_bpe": (59457, "OFA's English GPT-2 BPE (OFA-Sys/OFA utils/BPE: encoder.json, vocab.bpe, dict.txt)"),
    "ofa_bert_cn": (30325, "OFA-CN's Chinese WordPiece (OFA-Sys/OFA utils/BERT_CN_dict: vocab.txt, dict.txt)"),
}
_BPE_ARGUMENT = {"gpt2": "ofa_bpe", "bert": "ofa_bert_cn"}


def _recorded_bpe(checkpoint: Mapping[str, Any]) -> str | None:
    cfg = checkpoint.get("cfg")
    sections = [cfg.get("task"), cfg.get("model")] if isinstance(cfg, Mapping) else []
    sections.append(checkpoint.get("args"))
    for section in sections:
        if section is None:
            continue
        values = section if isinstance(section, Mapping) else vars(section)
        if isinstance(values.get("bpe"), str):
            return values["bpe"]
    return None


def checkpoint_vocabulary(checkpoint: Mapping[str, Any], vocab_size: int) -> str | None:
    """``"ofa_bpe"`` or ``"ofa_bert_cn"``: the tokenizer config of the vocabulary a checkpoint was trained with (its
    recorded ``bpe``, else its vocabulary size); None when neither says."""
    recorded = _BPE_ARGUMENT.get(_recorded_bpe(checkpoint) or "")
    if recorded is not None:
        return recorded
    return next((name for name, (size, _) in RELEASED_VOCABULARIES.items() if size == vocab_size), None)
