"""All-candidate scoring: rank a closed answer set by trie-normalised log-likelihood.

OFA's evaluation for VQA ("allcand"), SNLI-VE and ImageNet: encode the input
once; for every candidate answer ``c`` (token ids ending with EOS) teacher-force
``prompt + c`` through the decoder; at each answer position keep only the
tokens the trie allows after the answer prefix so far (logits outside → −inf,
so the softmax is renormalised over allowed tokens) and sum the log-probs of
the answer tokens, EOS included.  The prediction is the arg-max candidate.

Batching: candidates are processed ``chunk_size`` at a time for all samples
that share a prompt length; the encoder output is expanded (not recomputed).
With ``use_cache=True`` the prompt is decoded once per chunk and its KV cache
expanded to every candidate, so only the answer positions are decoded; logits
and log-softmax are only taken at answer positions.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .constraints import Trie

NEG_INF = float("-inf")


@dataclass
class CandidateScores:
    scores: Tensor  # (B, C) summed (trie-normalised) log-probs of each candidate incl. EOS
    best: Tensor  # (B,) arg-max candidate index


def pad_sequences(seqs: Sequence[Sequence[int] | Tensor], pad: int, device=None) -> Tensor:
    """Right-pad a list of token sequences into a (N, L) LongTensor."""
    rows = [torch.as_tensor(s, dtype=torch.long).view(-1) for s in seqs]
    length = max((r.numel() for r in rows), default=0)
    out = torch.full((len(rows), length), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out.to(device) if device is not None else out


def _as_padded(x, pad: int, device) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(device).long()
    return pad_sequences(x, pad, device)


@torch.no_grad()
def score_candidates(
    model,
    encoder_out,
    candidates: Tensor | Sequence[Sequence[int]],
    trie: Trie | None = None,
    prompts: Tensor | Sequence[Sequence[int]] | None = None,
    chunk_size: int = 20,
    constrained: bool = True,
    use_cache: bool = True,
    code_masks: Tensor | None = None,
) -> CandidateScores:
    """Score every candidate for every sample.

    Args:
        model: ``OFAModel`` (``decode``, ``new_cache``, ``config``).
        encoder_out: ``EncoderOutput`` for B samples.
        candidates: C token sequences, each ending with EOS (list, or (C, L) right-padded with pad).
        trie: allowed sequences; default: the trie of ``candidates``.
        prompts: decoder prompt per sample, starting with BOS (list, or (B, P)
            left-aligned and pad-padded); None = BOS only.
        chunk_size: candidates decoded together per sample (OFA's valid_batch_size: 20).
        constrained: False scores plain (unrenormalised) log-likelihood.
        use_cache: decode the prompt once and extend its cache (False: full teacher forcing).
    """
    mcfg = model.config
    pad, bos = mcfg.pad_token_id, mcfg.bos_token_id
    device = encoder_out.padding_mask.device
    bsz = encoder_out.padding_mask.size(0)

    cands = _as_padded(candidates, pad, device)  # (C, L)
    num_cands = cands.size(0)
    cand_len = cands.ne(pad).sum(1)
    if constrained and trie is None:
        trie = Trie((c[: int(n)].tolist() for c, n in zip(cands.cpu(), cand_len.cpu())), eos=mcfg.eos_token_id)

    if prompts is None:
        prompt_t = torch.full((bsz, 1), bos, dtype=torch.long, device=device)
    else:
        prompt_t = _as_padded(prompts, pad, device)
    prompt_len = prompt_t.ne(pad).sum(1)
    if bool((prompt_len < 1).any()):
        raise ValueError("every prompt needs at least the BOS token")

    scores = torch.empty(bsz, num_cands, dtype=torch.float32, device=device)
    trie_states = trie.states_for(cands, pad) if constrained else None  # (C, L)
    # Constrained scores only ever see the trie's tokens (every other logit is -inf before the
    # softmax): with a model that can project onto a subset, compute just those columns.
    vocab_ids = lookup = None
    if constrained and hasattr(model, "decode_hidden") and hasattr(model, "project"):
        vocab_ids = trie.token_ids(device)
        if 2 * vocab_ids.numel() > mcfg.vocab_size:
            vocab_ids = None
        else:
            lookup = torch.full((mcfg.vocab_size,), -1, dtype=torch.long, device=device)
            lookup[vocab_ids] = torch.arange(vocab_ids.numel(), device=device)

    # one group per distinct prompt length (positions are absolute: no left padding possible)
    for plen in torch.unique(prompt_len).tolist():
        group = (prompt_len == plen).nonzero(as_tuple=True)[0]
        g_enc = encoder_out.index_select(group)
        g_prompt = prompt_t[group, :plen]
        g_code = code_masks[group] if code_masks is not None else None
        prompt_state = None  # the prompt is decoded once per group and its cache shared by all chunks
        for c0 in range(0, num_cands, chunk_size):
            chunk = slice(c0, min(c0 + chunk_size, num_cands))
            width = int(cand_len[chunk].max())
            c_tok = cands[chunk, :width]  # (k, Lk)
            k = c_tok.size(0)
            if use_cache and prompt_state is None:
                prompt_state = _decode_prompt(model, g_enc, g_prompt, g_code, vocab_ids)
            logits = _teacher_forced_logits(
                model, g_enc, g_prompt, g_code, c_tok, use_cache, vocab_ids, prompt_state
            )  # (g, k, Lk, V')
            if constrained:
                allowed = trie.allowed_mask(trie_states[chunk, :width], mcfg.vocab_size)  # (k, Lk, V)
                if vocab_ids is not None:
                    allowed = allowed[..., vocab_ids]
                logits.masked_fill_(~allowed.unsqueeze(0), NEG_INF)  # logits are ours: no copy
            lprobs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
            target = c_tok.unsqueeze(0).expand(group.numel(), k, width)
            column = target if lookup is None else lookup[target]
            tok_lp = lprobs.gather(-1, column.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            if lookup is not None:  # a token outside the trie: impossible, as with the full vocabulary
                tok_lp = tok_lp.masked_fill(column.lt(0), NEG_INF)
            tok_lp = tok_lp.masked_fill(target.eq(pad), 0.0)
            scores[group, chunk] = tok_lp.sum(-1)
    return CandidateScores(scores=scores, best=scores.argmax(dim=1))


def _logits(model, tokens, enc, code_masks, cache, keep: slice, vocab_ids: Tensor | None) -> Tensor:
    """Logits of positions ``keep`` of the new decoder positions; only those are projected."""
    if not (hasattr(model, "decode_hidden") and hasattr(model, "project")):
        return model.decode(tokens, enc, code_masks=code_masks, cache=cache)[:, keep]
    hidden = model.decode_hidden(tokens, enc, code_masks, cache)[:, keep]
    return model.project(hidden) if vocab_ids is None else model.project(hidden, vocab_ids)


def _decode_prompt(model, enc, prompt: Tensor, code_masks, vocab_ids: Tensor | None):
    """Decode the prompts once: (logits predicting the first answer token (G, 1, V'), the filled cache)."""
    cache = model.new_cache()
    return _logits(model, prompt, enc, code_masks, cache, slice(-1, None), vocab_ids), cache


def _teacher_forced_logits(
    model,
    enc,
    prompt: Tensor,
    code_masks,
    cands: Tensor,
    use_cache: bool,
    vocab_ids: Tensor | None = None,
    prompt_state=None,
) -> Tensor:
    """Logits predicting each candidate token: (G, K, Lk, V) for G prompts × K candidates
    (V = ``vocab_ids.numel()`` columns when given). ``prompt_state``: from :func:`_decode_prompt`."""
    g, plen = prompt.shape
    k, width = cands.shape
    rows = torch.arange(g, device=prompt.device).repeat_interleave(k)  # sample of each (sample, cand) row
    # decoder input: prompt + candidate without its last token (EOS / pad)
    prev = torch.cat([prompt[rows], cands[:, : width - 1].repeat(g, 1)], dim=1)
    row_code = code_masks[rows] if code_masks is not None else None
    if use_cache:
        first, prompt_cache = prompt_state or _decode_prompt(model, enc, prompt, code_masks, vocab_ids)
        first = first[rows]  # predicts answer token 1
        if width > 1:
            cache = copy.copy(prompt_cache)  # reorder() rebinds its fields: the prompt cache stays as it is
            cache.reorder(rows)
            rest = _logits(model, prev, enc.index_select(rows), row_code, cache, slice(None), vocab_ids)
            out = torch.cat([first, rest], dim=1)
        else:
            out = first
    else:
        out = _logits(model, prev, enc.index_select(rows), row_code, None, slice(plen - 1, None), vocab_ids)
    return out.reshape(g, k, width, -1)
