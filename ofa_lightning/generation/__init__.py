"""Decoding for OFA: beam search, sampling, constraints and all-candidate scoring.

Front door::

    from ofa_lightning.generation import GenerationConfig, generate
    hyps = generate(model, batch, GenerationConfig.preset("caption"))
    hyps[i][0].tokens      # best hypothesis of input i (ends with EOS)

Results match fairseq's ``SequenceGenerator`` as ported by OFA/ModelScope
token for token (see ``beam_search`` for the exact step semantics).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .beam_search import Hypothesis, beam_candidates, best_tokens, search
from .constraints import (
    NUM_SPECIAL_TOKENS,
    OFA_BIN_RANGE,
    OFA_CODE_RANGE,
    Trie,
    apply_constraint_range,
    range_mask,
)
from .ngram import block_repeated_ngrams
from .sampling import sampling_candidates, top_p_filter
from .scoring import CandidateScores, pad_sequences, score_candidates
from .settings import PRESETS, GenerationConfig, register_preset

__all__ = [
    "CandidateScores",
    "GenerationConfig",
    "Hypothesis",
    "NUM_SPECIAL_TOKENS",
    "OFA_BIN_RANGE",
    "OFA_CODE_RANGE",
    "PRESETS",
    "Trie",
    "apply_constraint_range",
    "beam_candidates",
    "best_tokens",
    "block_repeated_ngrams",
    "generate",
    "register_preset",
    "pad_sequences",
    "range_mask",
    "sampling_candidates",
    "score_candidates",
    "search",
    "top_p_filter",
]


def _field(batch: Mapping[str, Any], *names: str):
    for source in (batch, batch.get("net_input") or {}):
        for name in names:
            if name in source and source[name] is not None:
                return source[name]
    return None


@torch.no_grad()
def generate(
    model,
    batch: Mapping[str, Any] | Tensor,
    config: GenerationConfig | None = None,
    *,
    prefix_tokens: Tensor | None = None,
    constraint_trie: Trie | None = None,
    code_masks: Tensor | None = None,
    generator: torch.Generator | None = None,
    encoder_out=None,
) -> list[list[Hypothesis]]:
    """Encode a batch and decode it with ``config`` (default: ``GenerationConfig()``).

    ``batch`` is an ``input_ids`` tensor, or a mapping holding ``input_ids`` (or ``src_tokens``; also looked up under
    ``net_input``), optional ``patch_images`` / ``patch_masks``, and optionally
    ``prefix_tokens`` (B, P) — a forced decoder prefix after BOS, left-aligned,
    pad-padded, stripped from the returned tokens — and ``code_masks`` (B,).
    Pass ``encoder_out`` to skip encoding.  The model is not switched to eval
    mode here; do that first (dropout would make decoding random).

    Returns, per input, hypotheses sorted best first (``config.nbest`` of them).
    """
    config = config or GenerationConfig()
    if isinstance(batch, Tensor):
        batch = {"input_ids": batch}
    input_ids = _field(batch, "input_ids", "src_tokens")
    if input_ids is None:
        raise KeyError("batch needs 'input_ids' (or 'src_tokens')")
    if encoder_out is None:
        encoder_out = model.encode(
            input_ids,
            patch_images=_field(batch, "patch_images"),
            patch_masks=_field(batch, "patch_masks"),
        )
    if prefix_tokens is None:
        prefix_tokens = _field(batch, "prefix_tokens")
    if code_masks is None:
        code_masks = _field(batch, "code_masks")
    if generator is None and config.strategy == "sampling" and config.seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(config.seed)
    return search(
        model,
        encoder_out,
        src_len=input_ids.size(1),
        config=config,
        prefix_tokens=prefix_tokens,
        constraint_trie=constraint_trie,
        code_masks=code_masks,
        generator=generator,
    )
