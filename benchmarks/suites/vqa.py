"""VQA decoding against the ModelScope port: trie-constrained beam search and all-candidate scoring.

The answer set is 3,129 synthetic answers (the size of OFA's VQAv2 answer list): token
sequences of 1-3 BPE tokens (60/30/10 %) drawn with a fixed seed, each ending in EOS.
No tokenizer or data files are needed.

* **Trie beam**: beam 5, unnormalised scores (OFA's VQA preset), at most 8 tokens, the
  trie of all answers; decoder prompt = BOS. Ours: ``generate(..., constraint_trie=Trie)``.
  Port: ModelScope ``SequenceGenerator(constraint_trie=...)``. Encoder included.
* **All-candidate scoring** (OFA's "allcand" evaluation): every answer is teacher-forced
  after BOS, the softmax is restricted at every position to the tokens the trie allows
  there, and the answer log-probs are summed. Ours: ``score_candidates``. Port: its
  decoder over BOS + answer for chunks of answers (OFA's traversal, as restated in
  ``tests/test_generation.py::modelscope_traverse_scores``), with the trie masks built once
  outside the timing (a favour to the port). Encoder included.
"""

from __future__ import annotations

import torch
from common import BOS, EOS, PAD

NUM_ANSWERS = 3129


def synthetic_answers(n: int = NUM_ANSWERS, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    seen: set[tuple[int, ...]] = set()
    out: list[list[int]] = []
    while len(out) < n:
        r = float(torch.rand(1, generator=g))
        length = 1 if r < 0.6 else (2 if r < 0.9 else 3)
        seq = tuple(int(t) for t in torch.randint(4, 50260, (length,), generator=g))
        if seq not in seen:
            seen.add(seq)
            out.append(list(seq) + [EOS])
    return out


def port_trie_masks(answers, vocab: int):
    """(C, Lmax, V) bool: the tokens the port's trie allows before each answer position."""
    from modelscope_ref import ms_trie

    trie = ms_trie(answers, BOS, EOS)
    width = max(len(a) for a in answers)
    masks = torch.zeros(len(answers), width, vocab, dtype=torch.bool)
    for i, a in enumerate(answers):
        for k in range(len(a)):
            masks[i, k, trie.get_next_layer([BOS] + a[:k])] = True
    return masks


@torch.no_grad()
def port_all_candidates(peer, input_ids, images, patch_masks, answers, masks, chunk: int = 64) -> torch.Tensor:
    """Scores (B, C) with the port: encoder once, then its decoder over [BOS] + answer per chunk."""
    from modelscope_ref import load_ms_ofa

    modeling = load_ms_ofa().modeling
    enc = peer.encoder(input_ids=input_ids, patch_images=images, patch_masks=patch_masks)
    prev_all = torch.full((len(answers), masks.shape[1]), PAD, dtype=torch.long)
    tgt_all = torch.full_like(prev_all, PAD)
    for i, a in enumerate(answers):
        prev_all[i, : len(a)] = torch.tensor([BOS] + a[:-1])
        tgt_all[i, : len(a)] = torch.tensor(a)
    out = torch.empty(input_ids.shape[0], len(answers))
    for b in range(input_ids.shape[0]):
        for c0 in range(0, len(answers), chunk):
            sl = slice(c0, min(c0 + chunk, len(answers)))
            prev, tgt, m = prev_all[sl], tgt_all[sl], masks[sl]
            n, width = prev.shape
            hidden = enc.last_hidden_state[b : b + 1].expand(n, -1, -1)
            logits = peer.decoder(
                prev,
                encoder_hidden_states=hidden,
                encoder_attention_mask=modeling._expand_mask(
                    enc.padding_mask[b : b + 1].expand(n, -1), hidden.dtype, width
                ),
                src_pos_embed=enc.position_embedding[b : b + 1].expand(n, -1, -1),
            )[0]
            logits = logits.masked_fill(~m, float("-inf"))
            lp = torch.log_softmax(logits, -1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            out[b, sl] = lp.masked_fill(tgt.eq(PAD), 0).sum(1)
    return out


def bench_vqa(peer, ours, batch, args, size: str, log) -> dict:
    """Time trie beam (batch 8) and all-candidate scoring (``args.allcand_batch`` samples), ours vs port."""
    from contention import timed_interleaved
    from modelscope_ref import ms_generate, ms_sequence_generator, ms_trie

    import ofa_lightning.tasks  # noqa: F401  (the tasks register their decoding presets)
    from ofa_lightning.generation import GenerationConfig, Trie, generate, score_candidates

    answers = synthetic_answers()
    trie = Trie(answers, eos=EOS)
    cfg = GenerationConfig.preset("vqa", max_len_a=0.0, max_len_b=8)
    gen = ms_sequence_generator(
        beam_size=5, max_len_a=0, max_len_b=8, normalize_scores=False, constraint_trie=ms_trie(answers, BOS, EOS)
    )
    gb = {"input_ids": batch.input_ids, "patch_images": batch.patch_images, "patch_masks": batch.patch_masks}
    res: dict = {}
    out: dict = {}

    def beam_ours():
        out["ours"] = generate(ours, gb, cfg, constraint_trie=trie)

    def beam_peer():
        out["peer"] = ms_generate(gen, peer, batch.input_ids, batch.patch_images, batch.patch_masks)

    with torch.no_grad():
        t = timed_interleaved(
            {"ours": beam_ours, "port": beam_peer},
            warmup=1,
            repeats=args.vqa_repeats,
            quiet_wait_s=args.quiet_wait,
            label=f"vqa-trie-beam/{size} ",
            log=log,
        )
    res["trie_beam_ours"], res["trie_beam_peer"] = t["ours"].summary(), t["port"].summary()
    res["trie_beam_same_best"] = all(
        torch.equal(out["ours"][i][0].tokens, out["peer"][i][0]["tokens"]) for i in range(len(out["ours"]))
    )
    res["trie_beam_answers_valid"] = all(h[0].tokens.tolist() in answers for h in out["ours"])

    nb = args.allcand_batch
    ids, imgs, pm = batch.input_ids[:nb], batch.patch_images[:nb], batch.patch_masks[:nb]
    masks = port_trie_masks(answers, ours.config.vocab_size)
    cand_t = torch.full((len(answers), max(len(a) for a in answers)), PAD, dtype=torch.long)
    for i, a in enumerate(answers):
        cand_t[i, : len(a)] = torch.tensor(a)
    scores: dict = {}

    def allcand_ours():
        with torch.no_grad():
            enc = ours.encode(ids, imgs, pm)
            scores["ours"] = score_candidates(ours, enc, cand_t, trie=trie, chunk_size=args.allcand_chunk).scores

    def allcand_peer():
        scores["peer"] = port_all_candidates(peer, ids, imgs, pm, answers, masks, chunk=args.allcand_chunk)

    t = timed_interleaved(
        {"ours": allcand_ours, "port": allcand_peer},
        warmup=0,
        repeats={"ours": args.vqa_repeats, "port": 1},
        max_rounds=args.vqa_repeats + 1,
        quiet_wait_s=args.quiet_wait,
        label=f"vqa-allcand/{size} ",
        log=log,
    )
    res["allcand_ours"], res["allcand_peer"] = t["ours"].summary(), t["port"].summary()
    res["allcand_max_abs_diff"] = float((scores["ours"] - scores["peer"]).abs().max())
    res["allcand_same_best"] = bool(torch.equal(scores["ours"].argmax(1), scores["peer"].argmax(1)))
    res["allcand_samples"] = nb
    res["num_answers"] = len(answers)
    res["answer_vocab"] = int(trie.token_ids().numel())
    log(
        f"  vqa/{size}: trie beam same best {res['trie_beam_same_best']}, all-cand max |Δ| "
        f"{res['allcand_max_abs_diff']:.1e}, same arg-max {res['allcand_same_best']}"
    )
    return res
