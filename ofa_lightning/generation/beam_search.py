"""Batched beam search / sampling over OFA's decoder (fairseq ``SequenceGenerator`` semantics).

The loop reproduces fairseq's (as ported by OFA and ModelScope) step for step,
so that the same model gives the same hypotheses:

* per step, per input: ``2 * beam`` candidates = top-k over ``beam × vocab``
  cumulative scores (step 0: the first beam only);
* candidates ending in EOS among the first ``beam`` are finalised (score =
  cumulative log-prob, divided by ``len ** len_penalty`` unless
  ``normalize_scores=False``); an input is done once it has ``beam`` finished
  hypotheses; the best ``beam`` non-EOS candidates continue;
* log-prob shaping, in fairseq's order: temperature on logits → trie / range
  masks on logits → log-softmax → forced prefix tokens (else EOS forbidden
  before ``min_len``) → NaN → -inf → pad -inf, unk penalty → ``gen_code``
  forbids specials before ``max_len`` → only EOS at ``max_len`` →
  no-repeat-n-gram blocking.

Everything is batched over inputs × beams; finished inputs are dropped from the
batch (encoder states and the decoder cache are index-selected), as in fairseq.
Trie constraints keep one trie node id per hypothesis and advance it with the
chosen token, so no per-hypothesis Python walk is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.outputs import DecoderCache
from .constraints import NUM_SPECIAL_TOKENS, Trie, apply_constraint_range
from .ngram import block_repeated_ngrams
from .sampling import sampling_candidates
from .settings import GenerationConfig

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """One finished hypothesis."""

    tokens: Tensor  # (L,) generated tokens ending with EOS (forced prefix stripped if asked)
    score: float  # normalised (or raw, with normalize_scores=False) sequence score
    positional_scores: Tensor  # (L,) log-prob of each returned token

    def __len__(self) -> int:
        return self.tokens.numel()


def beam_candidates(step: int, lprobs: Tensor, prev_scores: Tensor | None, inplace: bool = False):
    """fairseq ``search.BeamSearch.step``.

    Args:
        lprobs: (B, K, V) next-token log-probs per hypothesis.
        prev_scores: (B, K) cumulative scores (None at step 0).
        inplace: add ``prev_scores`` into ``lprobs`` itself (the search's own per-step tensor: one full-vocabulary
            pass and allocation less per step; same values).
    Returns:
        scores, tokens, source beams: each (B, min(2K, K·V − 1)).
    """
    bsz, beam, vocab = lprobs.shape
    if step == 0:
        lprobs = lprobs[:, :1]  # every beam is the same hypothesis
    elif inplace:
        lprobs = lprobs.add_(prev_scores.unsqueeze(-1))
    else:
        lprobs = lprobs + prev_scores.unsqueeze(-1)
    flat = lprobs.reshape(bsz, -1)
    scores, index = torch.topk(flat, k=min(2 * beam, flat.size(1) - 1))
    return scores, index.fmod(vocab), torch.div(index, vocab, rounding_mode="floor")


def _decoder_lprobs(
    model,
    tokens: Tensor,
    encoder_out,
    code_masks: Tensor | None,
    cache,
    config: GenerationConfig,
    trie: Trie | None,
    trie_states: Tensor | None,
    trie_rows: Tensor | None,
    range_rows: Tensor | None = None,
) -> Tensor:
    """Next-token log-probs (R, V) for the last position of ``tokens`` (R, t).

    ``range_rows`` (R,) bool: rows past their forced prefix, the only ones ``constraint_range`` applies to (None:
    all rows). OFA never combines the two; here a forced text prefix followed by bins (grounding with
    ``prompt_type=prev_output``) needs it.
    """
    logits = model.decode(tokens, encoder_out, code_masks=code_masks, cache=cache)[:, -1, :]
    if config.temperature != 1.0:
        logits = logits / config.temperature
    trie_mask = None
    if trie is not None:
        trie_mask = trie.allowed_mask(trie_states, logits.size(-1))
        if trie_rows is not None:
            trie_mask |= ~trie_rows.unsqueeze(1)  # rows still inside the forced prefix: unconstrained
    if not config.zero_shot:
        if trie_mask is not None:
            logits = logits.masked_fill(~trie_mask, NEG_INF)
        if config.constraint_range is not None:
            _range_on_rows(logits, config.constraint_range, range_rows)  # in place: the logits are ours
    lprobs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
    if config.zero_shot:
        if trie_mask is not None:
            lprobs.masked_fill_(~trie_mask, NEG_INF)
        _range_on_rows(lprobs, config.constraint_range, range_rows)
    return lprobs


def _range_on_rows(scores: Tensor, constraint_range, rows: Tensor | None) -> None:
    if constraint_range is None:
        return
    if rows is None:
        apply_constraint_range(scores, constraint_range)
    elif bool(rows.any()):
        scores[rows] = apply_constraint_range(scores[rows], constraint_range)


@torch.no_grad()
def search(
    model,
    encoder_out,
    src_len: int,
    config: GenerationConfig,
    prefix_tokens: Tensor | None = None,
    constraint_trie: Trie | None = None,
    code_masks: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> list[list[Hypothesis]]:
    """Beam search (``config.strategy == "beam"``) or sampling for a batch.

    Args:
        model: an ``OFAModel`` (``decode`` / ``new_cache`` / ``config``).
        encoder_out: ``EncoderOutput`` of the batch (B rows).
        src_len: padded width of the source ``input_ids`` (for ``max_len_a``).
        prefix_tokens: (B, P) forced decoder prefix (after BOS), left-aligned, pad-padded.
        constraint_trie: allowed continuations (after the prefix).
        code_masks: (B,) bool, True = decode in image-code mode (default: ``config.gen_code``).
        generator: RNG for sampling.
    Returns:
        for each input, its hypotheses sorted by score (best first), at most ``config.nbest``.
    """
    mcfg = model.config
    pad, bos, eos = mcfg.pad_token_id, mcfg.bos_token_id, mcfg.eos_token_id
    unk = getattr(mcfg, "unk_token_id", 3)
    sampling = config.strategy == "sampling"
    beam = config.beam_size
    max_len = config.max_length(src_len)
    bsz = encoder_out.padding_mask.size(0)
    num_inputs = bsz
    device = encoder_out.padding_mask.device
    if constraint_trie is not None and config.constraint_range is not None:
        raise ValueError("use either a constraint trie or a constraint range, not both")

    rows = torch.arange(bsz, device=device).repeat_interleave(beam)
    cache = model.new_cache() if config.use_cache else None
    if cache is not None and hasattr(model, "prime_cache"):
        # cross-attention K/V projected once per input, then repeated for its beams
        model.prime_cache(cache, encoder_out, rows)
    encoder_out = encoder_out.index_select(rows)
    if code_masks is None and config.gen_code:
        code_masks = torch.ones(bsz, dtype=torch.bool, device=device)
    if code_masks is not None:
        code_masks = code_masks.to(device).bool()[rows]

    tokens = torch.full((bsz * beam, max_len + 2), pad, dtype=torch.long, device=device)
    tokens[:, 0] = bos
    scores = torch.zeros(bsz * beam, max_len + 1, dtype=torch.float32, device=device)
    cands_to_ignore = torch.zeros(bsz, beam, dtype=torch.bool, device=device)

    prefix_len = None
    strip_len = None
    if prefix_tokens is not None:
        prefix_tokens = prefix_tokens.to(device).long()
        prefix_len = prefix_tokens.ne(pad).sum(1)
        if config.strip_prefix:
            strip_len = prefix_len.clone()
    # trie walking starts after the prefix (zero-shot: right after BOS)
    trie_start = None
    trie_states = None
    if constraint_trie is not None:
        trie_states = constraint_trie.root_states(bsz * beam, device)
        if prefix_len is not None and not config.zero_shot:
            trie_start = prefix_len

    # finished hypotheses, in finalisation order
    fin_tokens = torch.full((num_inputs, beam, max_len + 1), pad, dtype=torch.long, device=device)
    fin_pos = torch.zeros(num_inputs, beam, max_len + 1, dtype=torch.float32, device=device)
    fin_score = torch.full((num_inputs, beam), NEG_INF, dtype=torch.float32, device=device)
    fin_len = torch.zeros(num_inputs, beam, dtype=torch.long, device=device)
    fin_count = torch.zeros(num_inputs, dtype=torch.long, device=device)
    input_idx = torch.arange(num_inputs, device=device)  # active row -> original input

    # DecoderCache can skip the cross-attention entries on ordinary steps (beams of one input share them)
    cross_optional = isinstance(cache, DecoderCache)
    reorder: Tensor | None = None  # rows of the previous layout to take, for the cache
    shrunk = False
    cand_size = 2 * beam
    eos_t = torch.tensor(eos, device=device)

    for step in range(max_len + 1):
        if reorder is not None:
            if cache is not None:
                if cross_optional:
                    cache.reorder(reorder, cross=shrunk)  # rows move between inputs only when inputs are dropped
                else:
                    cache.reorder(reorder)
            if shrunk:  # beams of one input share encoder states: only shrinking needs a select
                encoder_out = encoder_out.index_select(reorder)
                if code_masks is not None:
                    code_masks = code_masks[reorder]

        trie_rows = None
        if trie_start is not None:
            trie_rows = (trie_start <= step).repeat_interleave(beam)
        range_rows = None
        if prefix_len is not None and config.constraint_range is not None:
            range_rows = (prefix_len <= step).repeat_interleave(beam)
        lprobs = _decoder_lprobs(
            model,
            tokens[:, : step + 1],
            encoder_out,
            code_masks,
            cache,
            config,
            constraint_trie,
            trie_states,
            trie_rows,
            range_rows,
        )

        if prefix_tokens is not None and step < prefix_tokens.size(1) and step < max_len:
            lprobs, tokens, scores = _force_prefix(
                step,
                lprobs,
                tokens,
                scores,
                prefix_tokens,
                beam,
                pad,
                eos,
                constraint_trie is not None or config.strict_prefix,
            )
        elif step < config.min_len:
            lprobs[:, eos] = NEG_INF
        # NaN → -inf in one in-place pass (masked_fill_(isnan) also wrote a full-vocabulary bool mask every step)
        torch.nan_to_num_(lprobs, nan=NEG_INF, posinf=float("inf"), neginf=NEG_INF)
        lprobs[:, pad] = NEG_INF
        if config.unk_penalty:
            lprobs[:, unk] -= config.unk_penalty
        if config.gen_code and step < max_len:
            lprobs[:, :NUM_SPECIAL_TOKENS] = NEG_INF
        if step >= max_len:
            eos_col = lprobs[:, eos].clone()
            lprobs.fill_(NEG_INF)
            lprobs[:, eos] = eos_col
        if config.no_repeat_ngram_size > 0:
            n = config.no_repeat_ngram_size
            block_rows = None
            if prefix_len is not None:
                block_rows = (prefix_len < step + n - 1).repeat_interleave(beam)
            block_repeated_ngrams(tokens[:, : step + 1], lprobs, n, block_rows)

        vocab = lprobs.size(-1)
        prev = scores[:, step - 1].view(bsz, beam) if step > 0 else None
        if sampling:
            cand_scores, cand_tokens, cand_beams = sampling_candidates(
                step, lprobs.view(bsz, beam, vocab), prev, config.sampling_topk, config.sampling_topp, generator
            )
        else:
            cand_scores, cand_tokens, cand_beams = beam_candidates(
                step, lprobs.view(bsz, beam, vocab), prev, inplace=True
            )  # lprobs is not used after this
        offsets = (torch.arange(bsz, device=device) * beam).unsqueeze(1)
        cand_rows = cand_beams + offsets

        # --- finalise hypotheses ending with EOS among the first `beam` candidates
        eos_mask = cand_tokens.eq(eos_t) & cand_scores.ne(NEG_INF)
        eos_mask[:, :beam] &= ~cands_to_ignore
        eos_first = eos_mask[:, :beam]
        has_eos = eos_first.any(1)
        if bool(has_eos.any()):
            rank = eos_first.long().cumsum(1) - 1
            room = beam - fin_count[input_idx]
            accept = eos_first & (rank < room.unsqueeze(1))
            a_row, a_col = accept.nonzero(as_tuple=True)
            hyp_rows = cand_rows[a_row, a_col]
            eos_scores = cand_scores[a_row, a_col]
            hyp_tokens = tokens[hyp_rows, 1 : step + 2].clone()
            hyp_tokens[:, step] = eos
            pos = scores[hyp_rows, : step + 1].clone()
            pos[:, step] = eos_scores
            pos[:, 1:] = pos[:, 1:] - pos[:, :-1]
            if config.normalize_scores:
                eos_scores = eos_scores / (step + 1) ** config.len_penalty
            sent = input_idx[a_row]
            slot = fin_count[sent] + rank[a_row, a_col]
            fin_tokens[sent, slot, : step + 1] = hyp_tokens
            fin_pos[sent, slot, : step + 1] = pos
            fin_score[sent, slot] = eos_scores
            fin_len[sent, slot] = step + 1
            fin_count.index_add_(0, sent, torch.ones_like(sent))
        if step >= max_len:
            break
        done = has_eos & (fin_count[input_idx] >= beam)
        if bool(done.all()):
            break

        # --- drop finished inputs from the batch
        shrunk = bool(done.any())
        if shrunk:
            keep = (~done).nonzero(as_tuple=True)[0]
            keep_rows = (keep.unsqueeze(1) * beam + torch.arange(beam, device=device)).view(-1)
            new_bsz = keep.numel()
            eos_mask = eos_mask[keep]
            cand_beams = cand_beams[keep]
            cand_rows = cand_beams + offsets[:new_bsz]
            cand_scores = cand_scores[keep]
            cand_tokens = cand_tokens[keep]
            cands_to_ignore = cands_to_ignore[keep]
            if prefix_tokens is not None:
                prefix_tokens = prefix_tokens[keep]
                prefix_len = prefix_len[keep]
                if trie_start is not None:
                    trie_start = trie_start[keep]
            tokens = tokens[keep_rows]
            scores = scores[keep_rows]
            if trie_states is not None:
                trie_states = trie_states[keep_rows]
            input_idx = input_idx[keep]
            bsz = new_bsz

        # --- continue with the best `beam` candidates that did not end (or were ignored)
        eos_mask[:, :beam] |= cands_to_ignore
        active_mask = eos_mask.long() * cand_size + torch.arange(eos_mask.size(1), device=device)
        ignore_key, active = torch.topk(active_mask, k=beam, dim=1, largest=False)
        cands_to_ignore = ignore_key.ge(cand_size)
        active_rows = cand_rows.gather(1, active).view(-1)
        new_tokens = cand_tokens.gather(1, active).view(-1)
        tokens[:, : step + 1] = tokens[active_rows, : step + 1]
        tokens[:, step + 1] = new_tokens
        if step > 0:
            scores[:, :step] = scores[active_rows, :step]
        scores[:, step] = cand_scores.gather(1, active).view(-1)
        if trie_states is not None:
            trie_states = trie_states[active_rows]
            advanced = constraint_trie.advance(trie_states, new_tokens)
            if trie_start is not None:
                advanced = torch.where((trie_start <= step).repeat_interleave(beam), advanced, trie_states)
            trie_states = advanced
        reorder = keep_rows[active_rows] if shrunk else active_rows

    return _collect(fin_tokens, fin_pos, fin_score, fin_len, fin_count, strip_len, config)


def _force_prefix(step, lprobs, tokens, scores, prefix_tokens, beam, pad, eos, strict):
    """Force the prefix token of this step (fairseq ``_prefix_tokens``).

    Rows whose prefix has a token here keep only that token's log-prob; every
    other token gets ``min(forced log-probs) - 1`` (OFA; ``-inf`` when
    ``strict``, i.e. under a trie or ``strict_prefix``), so the other beams
    carry low-scoring fillers until the prefix ends.  Rows whose prefix is
    already over (pad) are left alone.
    """
    forced_tok = prefix_tokens[:, step].repeat_interleave(beam).unsqueeze(1)  # (R, 1)
    forced_lp = lprobs.gather(1, forced_tok)
    forced = forced_tok.ne(pad)
    fill = torch.tensor(NEG_INF, device=lprobs.device) if strict else forced_lp.min() - 1
    lprobs = torch.where(forced, fill, lprobs)
    lprobs.scatter_(1, forced_tok, torch.where(forced, forced_lp, lprobs.gather(1, forced_tok)))
    # a prefix containing EOS finalises there: make all beams copies of the first one
    eos_rows = forced_tok.squeeze(1).eq(eos)
    if bool(eos_rows.any()):
        first = eos_rows.view(-1, beam)[:, 0]
        for buf in (tokens, scores, lprobs):
            view = buf.view(-1, beam, buf.size(-1))
            view[first] = view[first][:, :1, :]
    return lprobs, tokens, scores


def _collect(fin_tokens, fin_pos, fin_score, fin_len, fin_count, strip_len, config) -> list[list[Hypothesis]]:
    """Sort each input's finished hypotheses by score and unpack them."""
    order = torch.sort(fin_score, dim=1, descending=True, stable=True).indices
    fin_score = fin_score.gather(1, order)
    fin_len = fin_len.gather(1, order)
    idx = order.unsqueeze(-1).expand_as(fin_tokens)
    fin_tokens = fin_tokens.gather(1, idx)
    fin_pos = fin_pos.gather(1, idx)
    counts = fin_count.tolist()
    lengths = fin_len.tolist()
    score_list = fin_score.tolist()
    starts = strip_len.tolist() if strip_len is not None else [0] * len(counts)
    nbest = config.nbest or config.beam_size
    out: list[list[Hypothesis]] = []
    for i, count in enumerate(counts):
        hyps = []
        for j in range(min(count, nbest)):
            length, start = lengths[i][j], min(starts[i], lengths[i][j])
            hyps.append(
                Hypothesis(
                    tokens=fin_tokens[i, j, start:length],
                    score=score_list[i][j],
                    positional_scores=fin_pos[i, j, start:length],
                )
            )
        out.append(hyps)
    return out


def best_tokens(hypotheses: list[list[Hypothesis]], pad: int = 1, device=None) -> Tensor:
    """Top hypothesis of every input as a right-padded (B, L) tensor (EOS kept)."""
    seqs = [h[0].tokens if h else torch.empty(0, dtype=torch.long) for h in hypotheses]
    length = max((s.numel() for s in seqs), default=0)
    out = torch.full((len(seqs), length), pad, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        out[i, : s.numel()] = s
    return out
