"""Optional "official" COCO caption scores through pycocoevalcap, including its Java parts.

Not used by default (the kit's metrics are Java-free, see :mod:`.caption`). This runs Stanford's
PTBTokenizer and METEOR 1.5, both of which need a ``java`` executable on ``PATH``; BLEU, ROUGE-L and
CIDEr-D are then computed by pycocoevalcap on the PTB-tokenized captions. Useful as an offline parity
check against published numbers.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

__all__ = ["official_caption_scores"]


def official_caption_scores(
    preds: Sequence[str], refs: Sequence[Sequence[str]], per_image: bool = False
) -> dict[str, Any]:
    """Score captions with pycocoevalcap (PTB tokenization, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D).

    SPICE is not included: pycocoevalcap's SPICE downloads Stanford CoreNLP 3.6.0 models on first use.

    Args:
        preds: one raw caption per image.
        refs: the raw reference captions of each image.
        per_image: also return ``"<name>_per_image"`` lists (one float per image, in input order).

    Returns:
        ``{"bleu_1".."bleu_4", "meteor", "rouge_l", "cider"}`` on pycocoevalcap's scale.

    Raises:
        RuntimeError: if ``java`` is not on ``PATH`` or pycocoevalcap is not installed.
    """
    if shutil.which("java") is None:
        raise RuntimeError(
            "official_caption_scores needs a Java runtime: `java` was not found on PATH (pycocoevalcap's "
            "PTBTokenizer and METEOR are Java programs). Install a JRE or use the Java-free CIDErD/BLEU/ROUGEL."
        )
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as e:  # pragma: no cover - pycocoevalcap is a declared dependency
        raise RuntimeError(f"official_caption_scores needs the `pycocoevalcap` package: {e}") from e

    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} reference sets")
    gts_raw = {i: [{"caption": c} for c in r] for i, r in enumerate(refs)}
    res_raw = {i: [{"caption": p}] for i, p in enumerate(preds)}
    tok = PTBTokenizer()
    gts, res = tok.tokenize(gts_raw), tok.tokenize(res_raw)

    out: dict[str, Any] = {}
    bleu, bleu_images = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f"bleu_{k + 1}": float(b) for k, b in enumerate(bleu)})
    if per_image:
        out.update({f"bleu_{k + 1}_per_image": [float(x) for x in b] for k, b in enumerate(bleu_images)})
    meteor = Meteor()  # starts a JVM subprocess; pycocoevalcap stops it when the object is deleted
    try:
        scores = {"meteor": meteor.compute_score(gts, res)}
    finally:
        del meteor
    scores["rouge_l"] = Rouge().compute_score(gts, res)
    scores["cider"] = Cider().compute_score(gts, res)
    for name, (overall, images) in scores.items():
        out[name] = float(overall)
        if per_image:
            out[f"{name}_per_image"] = [float(x) for x in images]
    return out
