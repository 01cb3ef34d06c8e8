"""Cheap guards on work done (row counts, copies, FLOPs), never on wall-clock time.

* the training loss projects only the non-pad target rows onto the vocabulary;
* beam search projects the cross-attention K/V once per input (not per beam) and never copies
  them on ordinary steps;
* constrained all-candidate scoring projects only the trie's tokens, with the same scores;
* the eval ResNet with BatchNorm folded equals the unfolded one, and follows weight changes; its residual
  conv + add + ReLU runs in place in the shortcut's memory, with the out-of-place kernel's values;
* ResNet checkpointing (per block and per stage) gives the same loss, gradients and BatchNorm statistics as
  without, and keeps fewer tensors for backward;
* CPU low-precision training attention keeps the bytes of its dtype and computes SDPA's sum;
* the relative-bias bucket lookup's backward is one ``index_add_`` with the embedding gradient;
* eval-mode CPU linears run oneDNN with a prepacked weight, equal to ``F.linear``; evaluated models still copy.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ofa_lightning.generation import GenerationConfig, Trie, generate, score_candidates
from ofa_lightning.model import OFAConfig
from ofa_lightning.model.outputs import DecoderCache, select_rows
from ofa_lightning.speed import SpeedConfig, build_model

PAD, BOS, EOS = 1, 0, 2
REPO = Path(__file__).resolve().parents[1]
SMALL = dict(
    d_model=32,
    encoder_layers=1,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    vocab_size=500,
    max_source_positions=64,
    max_target_positions=64,
    dropout=0.0,
)


@pytest.fixture(scope="module")
def model(one_thread):
    torch.manual_seed(0)
    return build_model(OFAConfig.from_name("tiny", **SMALL)).eval()


def text_batch(b: int = 3, length: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 500, (b, length), generator=g)
    ids[:, 0], ids[:, -1] = BOS, EOS
    ids[1, -2:] = PAD
    ids[1, -3] = EOS
    return ids


def test_training_loss_projects_only_real_target_rows(model):
    from ofa_lightning.training.loss import LossConfig, seq2seq_loss

    target = torch.tensor([[5, 6, 7, EOS], [8, EOS, PAD, PAD], [9, 10, EOS, PAD]])
    prev = torch.cat([torch.full((3, 1), BOS), target[:, :-1].masked_fill(target[:, :-1].eq(EOS), PAD)], 1)
    batch = {"input_ids": text_batch(), "prev_output_tokens": prev, "target": target}
    seen, flops = [], []
    original = model.decoder.project

    def counting(hidden, *args):
        seen.append(hidden.shape[0])
        with FlopCounterMode(display=False) as counter:
            out = original(hidden, *args)
        flops.append(counter.get_total_flops())
        return out

    model.decoder.project = counting
    try:
        seq2seq_loss(model.train(), batch, LossConfig(), PAD)
    finally:
        del model.decoder.project
        model.eval()
    n_real = int(target.ne(PAD).sum())  # 9 real tokens of 12 positions
    assert seen == [n_real]
    assert flops == [2 * n_real * model.config.d_model * model.config.vocab_size]


def test_beam_search_projects_cross_kv_once_per_input_and_never_copies_it(model):
    ids = text_batch()
    rows_projected = []
    hook = model.decoder.layers[0].encoder_attn.k_proj.register_forward_hook(
        lambda mod, inp, out: rows_projected.append(inp[0].shape[0])
    )
    ptrs, flags, shapes = [], [], []
    decode = model.decode
    reorder = DecoderCache.reorder

    def tracking_decode(tokens, enc, code_masks=None, cache=None):
        out = decode(tokens, enc, code_masks=code_masks, cache=cache)
        ptrs.append(cache.cross_kv[0][0].data_ptr())
        shapes.append((tokens.shape[0], cache.cross_kv[0][0].shape[0], cache.cross_group))
        return out

    def tracking_reorder(self, order, cross=True):
        flags.append(cross)
        return reorder(self, order, cross)

    model.decode = tracking_decode
    DecoderCache.reorder = tracking_reorder
    try:
        cfg = GenerationConfig(beam_size=4, min_len=6, max_len_a=0.0, max_len_b=6)
        hyps = generate(model, ids, cfg)
    finally:
        del model.decode
        DecoderCache.reorder = reorder
        hook.remove()
    assert all(len(h[0].tokens) == 7 for h in hyps)  # 6 tokens + EOS: every input runs to the end
    assert rows_projected == [ids.shape[0]]  # B rows, not B × beam
    assert len(set(ptrs)) == 1  # the same cross K/V storage at every step
    assert flags and not any(flags)  # ordinary steps leave the cross entries alone
    # the cross K/V are held once per input (not per beam row) and read by all four beams of the input at once
    assert set(shapes) == {(ids.shape[0] * 4, ids.shape[0], 4)}


def test_grouped_cross_kv_reorder_and_attention_equal_per_row_entries(model):
    """The once-per-input cross K/V: attention over (g·B) queries with B shared K/V rows equals the per-row one, and
    reordering keeps whole groups per input (dropping finished inputs) or falls back to per-row entries."""
    torch.manual_seed(0)
    att = model.decoder.layers[0].encoder_attn
    b, g, s = 3, 4, 9
    x = torch.randn(b * g, 2, 32)
    k, v = torch.randn(b, 2, s, 16), torch.randn(b, 2, s, 16)
    bias = torch.randn(b * g, 2, 2, s)
    rows = torch.arange(b).repeat_interleave(g)
    with torch.no_grad():
        grouped, per_row = att(x, k, v, bias), att(x, k[rows], v[rows], bias)
        shared_bias = att(x, k, v, bias[:1]), att(x, k[rows], v[rows], bias[:1])
    torch.testing.assert_close(grouped, per_row)
    torch.testing.assert_close(*shared_bias)
    with pytest.raises(ValueError, match="cannot share"):
        att(x[:5], k, v, None)
    cache = DecoderCache(cross_kv=[(k, v)], cross_group=g)
    keep = torch.tensor([2, 1, 0, 3, 8, 11, 9, 10])  # inputs 0 and 2, beams shuffled within each
    cache.reorder(keep)
    assert cache.cross_group == g and torch.equal(cache.cross_kv[0][0], k[[0, 2]])
    cache.reorder(torch.tensor([0, 4, 1, 5, 2, 6, 3, 7]))  # rows of two inputs interleaved: per-row entries
    assert cache.cross_group == 1 and torch.equal(cache.cross_kv[0][0], k[[0, 2, 0, 2, 0, 2, 0, 2]])


def test_beam_search_with_shrinking_batch_matches_no_cache(model):
    """Inputs finish at different steps (shrinking): cached decoding equals recomputation."""
    ids = text_batch(4, seed=1)
    cfg = GenerationConfig(beam_size=3, max_len_a=0.0, max_len_b=8)
    a = generate(model, ids, cfg)
    b = generate(model, ids, GenerationConfig(beam_size=3, max_len_a=0.0, max_len_b=8, use_cache=False))
    for x, y in zip(a, b):
        assert [h.tokens.tolist() for h in x] == [h.tokens.tolist() for h in y]
        torch.testing.assert_close(
            torch.tensor([h.score for h in x]), torch.tensor([h.score for h in y]), atol=1e-5, rtol=0
        )


def test_constrained_scoring_projects_only_trie_tokens(model):
    g = torch.Generator().manual_seed(3)
    cands = [[int(t) for t in torch.randint(4, 60, (n,), generator=g)] + [EOS] for n in (1, 2, 3, 1, 2)]
    trie = Trie(cands, eos=EOS)
    enc = model.encode(text_batch())
    widths = []
    original = model.decoder.project

    def counting(hidden, vocab_ids=None):
        widths.append(model.config.vocab_size if vocab_ids is None else vocab_ids.numel())
        return original(hidden, vocab_ids)

    model.decoder.project = counting
    try:
        got = score_candidates(model, enc, cands, trie=trie, chunk_size=2)
    finally:
        del model.decoder.project
    assert widths and set(widths) == {trie.token_ids().numel()}

    class FullVocabulary:  # the same model without decode_hidden/project: full-vocabulary logits
        def __init__(self, m):
            self.config, self.decode, self.new_cache = m.config, m.decode, m.new_cache

    ref = score_candidates(FullVocabulary(model), enc, cands, trie=trie, chunk_size=2)
    torch.testing.assert_close(got.scores, ref.scores, atol=1e-5, rtol=0)
    assert torch.equal(got.best, ref.best)


def test_select_rows_equals_index_select_for_strided_and_single_rows():
    x = torch.randn(3, 5, 2, 4).transpose(1, 2)
    order = torch.tensor([2, 0, 0, 1])
    assert torch.equal(select_rows(x, order), x.index_select(0, order))
    one = torch.randn(1, 5, 4)
    assert torch.equal(select_rows(one, torch.zeros(3, dtype=torch.long)), one.expand(3, -1, -1))


@pytest.fixture(scope="module")
def trunk_models(one_thread):
    torch.manual_seed(0)
    folded = build_model(OFAConfig.from_name("tiny", **SMALL))
    plain = build_model(OFAConfig.from_name("tiny", **SMALL), SpeedConfig(fold_batchnorm=False))
    plain.load_state_dict(folded.state_dict())
    # non-trivial BatchNorm statistics and affine parameters
    with torch.no_grad():
        for m in (folded, plain):
            for i, bn in enumerate(x for x in m.encoder.embed_images.modules() if isinstance(x, torch.nn.BatchNorm2d)):
                g = torch.Generator().manual_seed(i)
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
    return folded.eval(), plain.eval()


def assert_close_to_scale(a, b, rel: float = 1e-5):
    """fp32 rounding: the largest difference is tiny next to the largest activation."""
    scale = float(b.abs().max())
    assert scale > 0 and float((a - b).abs().max()) <= rel * scale, (float((a - b).abs().max()), scale)


def test_batchnorm_folding_matches_and_follows_weight_changes(trunk_models):
    folded, plain = trunk_models
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = folded.encoder.embed_images.forward_features(images)
        b = plain.encoder.embed_images.forward_features(images)
        assert_close_to_scale(a, b)
        assert folded.encoder.embed_images._folded is not None  # the folded path ran
        for m in (folded, plain):  # change a statistic: the folded weights are rebuilt
            m.encoder.embed_images.layer1[0].bn1.running_mean.add_(0.5)
        assert_close_to_scale(
            folded.encoder.embed_images.forward_features(images), plain.encoder.embed_images.forward_features(images)
        )
    # with autograd on, the ordinary (unfolded) modules run, so gradients reach the BN parameters
    out = folded.encoder.embed_images.forward_features(images)
    out.sum().backward()
    assert folded.encoder.embed_images.bn1.weight.grad is not None
    folded.zero_grad(set_to_none=True)


def test_fused_cpu_convolutions_equal_the_plain_folded_trunk(trunk_models, monkeypatch):
    from ofa_lightning.speed.resnet import FastResNet as OFAResNet

    folded, _ = trunk_models
    trunk = folded.encoder.embed_images
    images = torch.randn(2, 3, 64, 64)
    if not trunk._fused_ok(images):
        pytest.skip("this torch build has no oneDNN fused convolutions")
    calls = []
    real = OFAResNet._walk_folded
    monkeypatch.setattr(
        OFAResNet,
        "_walk_folded",
        lambda self, x, act, add: calls.append((act.__name__, add.__name__)) or real(self, x, act, add),
    )
    fused_ops, plain_ops = (
        ("_prepacked_conv_act", "_prepacked_conv_add_relu"),
        ("_plain_conv_act", "_plain_conv_add_relu"),
    )
    with torch.no_grad():
        fused = trunk.forward_features(images)
        assert calls == [fused_ops]  # the fused kernels ran
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16-mixed: the plain (autocast) convolutions
            assert trunk.forward_features(images).dtype == torch.bfloat16 and calls == [fused_ops, plain_ops]
        one = trunk.forward_features(images[:1])  # a new input shape: the weights are packed again for it
        monkeypatch.setattr(trunk, "fuse_cpu", False)
        plain = trunk.forward_features(images)
        assert calls == [fused_ops, plain_ops, fused_ops, plain_ops]
        one_plain = trunk.forward_features(images[:1])
    assert_close_to_scale(fused, plain)
    assert_close_to_scale(one, one_plain)  # packed for the second shape too (fp32 summation order may differ)


@pytest.mark.parametrize("channels_last", [True, False])
def test_inplace_residual_kernel_equals_out_of_place_and_writes_only_trunk_buffers(
    trunk_models, monkeypatch, channels_last
):
    """The folded trunk's conv + add + ReLU writes into the shortcut's memory (no fresh output): same values as the
    out-of-place kernel, the caller's images untouched, and really in place (the output shares the shortcut's
    storage)."""
    import ofa_lightning.speed.resnet as resnet

    folded, _ = trunk_models
    trunk = folded.encoder.embed_images
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.randn(2, 3, 64, 64).contiguous(memory_format=fmt)
    if not trunk._fused_ok(images):
        pytest.skip("this torch build has no oneDNN fused convolutions")
    kept = images.clone()
    shared = []
    real = resnet._fused_conv_add_relu

    def spy(y, shortcut, c, wb, inplace=True):
        out = real(y, shortcut, c, wb, inplace)
        shared.append(out.untyped_storage().data_ptr() == shortcut.untyped_storage().data_ptr())
        return out

    monkeypatch.setattr(resnet, "_fused_conv_add_relu", spy)
    monkeypatch.setattr(trunk, "channels_last", channels_last)
    with torch.no_grad():
        inplace = trunk.forward_features(images)
        n_blocks = sum(len(getattr(trunk, name)) for name in resnet.STAGES)
        assert len(shared) == n_blocks and all(shared)  # every block's residual add ran in place
        monkeypatch.setattr(trunk, "inplace_residual", False)
        outplace = trunk.forward_features(images)
        assert len(shared) == 2 * n_blocks and not any(shared[n_blocks:])
    torch.testing.assert_close(inplace, outplace, rtol=0, atol=0)
    assert torch.equal(images, kept)


@pytest.mark.parametrize("mode,segments", [(True, [8, 8, 8]), ("stages", [8, 8, 8]), ("stages", [1, 2, 3])])
def test_resnet_checkpointing_keeps_loss_gradients_and_bn_statistics(one_thread, mode, segments):
    torch.manual_seed(0)
    a = build_model(OFAConfig.from_name("tiny", **SMALL)).train()
    b = build_model(
        OFAConfig.from_name("tiny", **SMALL), SpeedConfig(checkpoint_resnet=mode, checkpoint_resnet_segments=segments)
    ).train()
    assert len(b.encoder.embed_images._segments()) == (4 if segments == [8, 8, 8] else 1 + 3 + 2 + 2)
    b.load_state_dict(a.state_dict())
    ids, images = text_batch(2), torch.randn(2, 3, 32, 32)
    prev = ids.clone()
    losses = []
    for m in (a, b):
        logits = m(ids, prev, images, torch.ones(2, dtype=torch.bool))
        loss = logits.float().logsumexp(-1).mean()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    ga = dict(a.named_parameters())
    for name, p in b.named_parameters():
        torch.testing.assert_close(p.grad, ga[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    sa = a.state_dict()
    for name, t in b.state_dict().items():  # running statistics and num_batches_tracked updated exactly once
        assert torch.allclose(t.float(), sa[name].float(), atol=1e-6), name


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of ``fn()``."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_resnet_checkpoint_modes_keep_fewer_tensors(one_thread):
    from ofa_lightning.model.resnet import build_resnet
    from ofa_lightning.speed.config import checkpoint_mode
    from ofa_lightning.speed.resnet import FastResNet

    torch.manual_seed(0)
    trunk = build_resnet("resnet50").train()
    trunk.__class__ = FastResNet  # what apply_speed does to the model's trunk
    images = torch.randn(2, 3, 64, 64)
    kept = {}
    for mode in ("off", "blocks", "stages"):
        trunk.checkpoint_mode = mode
        kept[mode] = saved_bytes(lambda: trunk.forward_features(images))
    # off keeps every activation; blocks keeps the stem's activations and each bottleneck's input; stages keeps the
    # image and the inputs of stages 1, 2 and 3 only (the stem's output, then stage 1's and stage 2's)
    assert kept["stages"] < kept["blocks"] / 2 < kept["off"] / 4, kept
    assert kept["stages"] <= images.nbytes + 2 * 64 * 16 * 16 * 4 + 2 * 256 * 16 * 16 * 4 + 2 * 512 * 8 * 8 * 4
    assert [len(s) for s in trunk._segments()] == [4, 3, 4, 6]  # stem (conv, bn, act, pool) | 3 | 4 | 6 blocks
    trunk.segment_sizes = (1, 2, 3)  # finer: more segment inputs kept, smaller segments
    assert [len(s) for s in trunk._segments()] == [4, 1, 1, 1, 2, 2, 3, 3]
    assert kept["stages"] < saved_bytes(lambda: trunk.forward_features(images)) < kept["blocks"]
    for bad in ([1, 2], [0, 1, 1], [1.5, 2, 3], "123"):
        with pytest.raises(ValueError, match="checkpoint_resnet_segments must be three positive integers"):
            SpeedConfig(checkpoint_resnet_segments=bad)
    assert [checkpoint_mode(v) for v in (True, False, "stages", "none")] == ["blocks", "off", "stages", "off"]
    with pytest.raises(ValueError, match="checkpoint_resnet must be one of"):
        SpeedConfig(checkpoint_resnet="layers")


def test_cpu_low_precision_training_attention(one_thread, monkeypatch):
    """Under CPU bf16 autocast with autograd, attention keeps bf16 scores (SDPA's math path would upcast q, k, v,
    scores and probabilities to fp32 for the backward); without autograd SDPA runs; both compute the same sum."""
    import torch.nn.functional as F

    from ofa_lightning.speed import attention as A

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    bias = torch.randn(2, 1, 5, 5, generator=g)  # broadcast over heads, like a padding mask
    for b in (bias, None):
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=b, scale=0.3)
        torch.testing.assert_close(A.reduced_precision_attention(q, k, v, b, 0.0, 0.3), want)

    torch.manual_seed(0)
    layer = A.SpeedAttention(32, 4).train()
    layer.lean_cpu = True  # the speed switch lean_cpu_attention
    x = torch.randn(2, 48, 32, requires_grad=True)  # long enough for the (B, H, T, T) scores to dominate
    pos_bias = torch.randn(2, 4, 48, 48, requires_grad=True)  # learned position bias: SDPA has to take its math path
    calls = []
    real = A.reduced_precision_attention
    monkeypatch.setattr(A, "reduced_precision_attention", lambda *a: calls.append(1) or real(*a))

    def run():
        kk, vv = layer.project_kv(x)
        return layer(x, kk, vv, pos_bias)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run()
        lean = saved_bytes(run)
        assert len(calls) == 2
        monkeypatch.setattr(A, "_use_reduced_precision_path", lambda q: False)
        sdpa = run()
        fat = saved_bytes(run)
    assert out.dtype == sdpa.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), sdpa.float(), atol=2e-2, rtol=2e-2)
    assert lean < 0.6 * fat, (lean, fat)
    out.float().sum().backward()
    assert pos_bias.grad is not None and x.grad is not None and torch.isfinite(pos_bias.grad).all()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        monkeypatch.undo()
        calls.clear()
        monkeypatch.setattr(A, "reduced_precision_attention", lambda *a: calls.append(1) or real(*a))
        run()
    assert calls == []  # inference keeps SDPA (its fused CPU kernels)


def test_step_profiler_splits_a_real_step(one_thread, monkeypatch):
    """``benchmarks/harness/profile_step.py`` (the "where the time goes" table of ``make bench``): every component's timer
    fires inside a real step — ResNet, encoder, decoder, projection, optimiser, and the attention / FFN split of the
    layers — and the FLOP counts add up."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks" / "suites"))
    monkeypatch.syspath_prepend(str(REPO / "benchmarks" / "harness"))
    from common import build_ours, make_batch
    from profile_step import COMPONENTS, format_profile, profile_training_step
    from train_step import DEFAULT

    small = {k: v for k, v in SMALL.items() if k != "vocab_size"}  # the benchmark batch uses OFA's token ids
    model = build_ours("tiny", train=True, **small)
    batch = make_batch(seed=0, batch=2, px=64)
    prof = profile_training_step(model, batch, DEFAULT, repeats=1, quiet_wait_s=0.0)
    rows = {r["key"]: r for r in prof["components"]}
    assert set(COMPONENTS) <= set(rows)
    for key in ("resnet", "encoder", "decoder", "projection"):
        assert rows[key]["seconds"] > 0 and rows[key]["gflop"] > 0, key
    split = {r["key"]: r for r in prof["layer_split"]}
    assert split["ffn"]["seconds"] > 0 and split["attention"]["seconds"] > 0
    layers_s = rows["encoder"]["seconds"] + rows["decoder"]["seconds"]
    assert abs(split["ffn"]["seconds"] + split["attention"]["seconds"] - layers_s) < 1e-9
    # FFN FLOPs: fc1 and fc2 cost 2·d·ffn per token forward and twice that backward (input and weight gradients);
    # encoder tokens = 4x4 patches of the 64 px image + 20 source tokens, decoder tokens = 20, per row
    b, d, ffn = 2, SMALL["d_model"], SMALL["encoder_ffn_dim"]
    tokens = b * (16 + 20) * SMALL["encoder_layers"] + b * 20 * SMALL["decoder_layers"]
    assert split["ffn"]["gflop"] * 1e9 == pytest.approx(2 * 6 * d * ffn * tokens)
    assert 0 < split["ffn"]["gflop"] < rows["encoder"]["gflop"] + rows["decoder"]["gflop"]
    table = format_profile(prof)
    assert "↳ of which FFN" in table and "ResNet trunk" in table


def test_attention_biases_stay_in_the_autocast_dtype_and_contiguous(model, monkeypatch):
    """The per-layer position biases reach the attention kernel already in bf16 under autocast and contiguous.

    On a GPU the (B, H, S, S) bias sums were the largest kernels of a training step while they were promoted to
    fp32, written through a permuted view and cast again (benchmarks/results/RESULTS.md, GPU).
    """
    import torch.nn.functional as F

    from ofa_lightning.model.attention import Attention
    from ofa_lightning.model.encoder import relative_bias

    seen = []
    original = Attention.forward

    def spy(self, x, k, v, bias):
        if bias is not None:
            seen.append((bias.dtype, bias.is_contiguous(), tuple(bias.shape)))
        return original(self, x, k, v, bias)

    monkeypatch.setattr(Attention, "forward", spy)
    ids = torch.randint(4, 500, (3, 7))
    images = torch.randn(3, 3, 64, 64)
    prev = torch.randint(4, 500, (3, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc = model.encode(ids, images, torch.ones(3, dtype=torch.bool))
        model.decode_hidden(prev, enc)
    assert seen and all(dtype == torch.bfloat16 and contiguous for dtype, contiguous, _ in seen), seen
    assert any(shape[-1] == 16 + 7 for *_, shape in seen)  # the encoder's image + text self-attention

    # the lookup itself: values of the plain permuted embedding, contiguous, cast once, gradients in fp32
    layer = model.encoder
    index = torch.randint(0, 20, (1, 6, 6))
    table = torch.cat(
        [
            layer.token_rel_pos_table_list[0].weight,
            layer.image_rel_pos_table_list[0].weight,
            layer.token_rel_pos_table_list[0].weight.new_zeros(1, 2),
        ]
    )
    plain = F.embedding(index, table).permute(0, 3, 1, 2)
    got = relative_bias(index, layer.token_rel_pos_table_list[0], layer.image_rel_pos_table_list[0])
    assert torch.equal(got, plain) and got.is_contiguous()
    half = relative_bias(index, layer.token_rel_pos_table_list[0], layer.image_rel_pos_table_list[0], torch.bfloat16)
    assert half.dtype == torch.bfloat16 and torch.equal(half, plain.to(torch.bfloat16))


def test_relative_bias_lookup_backward_is_one_index_add():
    """The (S × S) bucket lookup's backward is one ``index_add_`` (CPU's ``embedding_dense_backward`` scans the index
    once per 1,000 table rows), with the gradient of the plain embedding lookup."""
    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode

    from ofa_lightning.model.encoder import relative_bias
    from ofa_lightning.speed.lookups import IndexAddBucketLookup

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    g = torch.Generator().manual_seed(0)
    text, image = torch.nn.Embedding(7, 3), torch.nn.Embedding(11, 3)
    index = torch.randint(0, 19, (1, 9, 9), generator=g)  # 19 = 7 + 11 + the zero row
    upstream = torch.randn(1, 3, 9, 9, generator=g)
    out = relative_bias(index, text, image, lookup=IndexAddBucketLookup())
    with Ops() as ops:
        (out * upstream).sum().backward()
    assert "embedding_dense_backward.default" not in ops.names and "index_add_.default" in ops.names
    table = torch.cat([text.weight, image.weight, torch.zeros(1, 3)]).detach().requires_grad_()
    (F.embedding(index, table).permute(0, 3, 1, 2) * upstream).sum().backward()
    torch.testing.assert_close(text.weight.grad, table.grad[:7])
    torch.testing.assert_close(image.weight.grad, table.grad[7:18])


def test_prepacked_cpu_linear_matches_f_linear_and_follows_weight_changes(one_thread):
    """Eval + no-grad CPU fp32 linears run oneDNN with a cached prepacked weight; outputs equal F.linear, the pack is
    rebuilt when the weight changes and dropped when training starts; training and autocast keep F.linear."""
    import copy
    import pickle

    import torch.nn.functional as F

    from ofa_lightning.speed.linear import PrepackedLinear as Linear

    torch.manual_seed(0)
    lin = Linear(16, 24).eval()
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))
        assert lin._packed is not None
        first = lin._packed[1]
        assert lin(torch.randn(40, 16)).shape == (40, 24) and lin._packed[1] is first  # any row count, same pack
        lin.weight.mul_(2)  # an in-place update (optimiser, load_state_dict) bumps the version: repacked
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias))
        assert lin._packed[1] is not first
    clone = copy.deepcopy(lin)  # oneDNN's opaque tensors cannot be copied: the cache stays behind
    assert clone._packed is None and lin._packed is not None and pickle.loads(pickle.dumps(lin))._packed is None
    lin.train()
    assert lin._packed is None
    y = lin(x)  # training: F.linear with autograd
    assert y.grad_fn is not None and lin._packed is None
    lin.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16 and lin._packed is None  # autocast keeps its own path


def test_evaluated_model_can_be_deep_copied_and_pickled(model):
    """The eval caches (folded + prepacked ResNet weights, packed linears) never travel with a copy or a pickle."""
    import copy
    import pickle

    ids, images, masks = text_batch(2), torch.randn(2, 3, 32, 32), torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        want = model(ids, ids, images, masks)
    assert model.encoder.embed_images._folded is not None
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.encoder.embed_images._folded is None
        with torch.no_grad():
            torch.testing.assert_close(clone(ids, ids, images, masks), want)  # caches rebuilt on demand


def test_model_package_imports_no_training_stack():
    """The benchmark's training child measures peak RSS with only the model imported (as the port's child does);
    the model package, the fused criterion included, must not pull in Lightning or Hydra (~0.1 GB more).

    W&B is not checked: timm imports it itself when it is installed (timm.utils.summary), and the port's child pays
    the same through its own timm import, so it does not bias the comparison."""
    import subprocess
    import sys

    code = (
        "import sys, ofa_lightning.model, ofa_lightning.speed.seam, ofa_lightning.speed.fused_ce; "
        "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'hydra') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_train_rounds_report_and_section_replacement(monkeypatch):
    """``benchmarks/suites/train_rounds.py``: the per-round table and the verdict come from the rows given (a round that
    misses either half is counted as not met), and re-running replaces its RESULTS.md section in place, before the
    data-pipeline section, leaving the other sections alone."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks" / "suites"))
    monkeypatch.syspath_prepend(str(REPO / "benchmarks" / "harness"))
    import train_rounds as tr

    rows = [
        dict(
            round=1,
            first="peer",
            ours_step_s=1.0,
            peer_step_s=2.2,
            ours_rss_mb=1500,
            peer_rss_mb=2800,
            speed=2.2,
            memory=1500 / 2800,
            contended=False,
            met=True,
        ),
        dict(
            round=2,
            first="ours",
            ours_step_s=1.2,
            peer_step_s=2.1,
            ours_rss_mb=1700,
            peer_rss_mb=2700,
            speed=1.75,
            memory=1700 / 2700,
            contended=True,
            met=False,
        ),
    ]
    summary = tr.summary(rows)
    assert (summary["median_speed"], summary["min_speed"], summary["met_rounds"]) == (1.975, 1.75, 1)
    data = {"configs": {"lean": "bf16"}, "allocator": "tcmalloc", "sizes": {"tiny": {"lean": summary}}}
    info = dict(date="2026-12-06", cpu="cpu", threads=2, torch="2.x", modelscope="1.x")
    body = tr.report(data, info)
    assert body.startswith(tr.SECTION) and "**lean** `bf16`" in body
    assert "| tiny | lean | 1 | peer | 1.000 | 2.200 | 2.20× |" in body and "1.75× ⚠" in body
    assert "| tiny | lean | 1.98× | 1.75× | 0.58× | 0.63× | 1 of 2 |" in body  # median of 0.536 and 0.630

    text = "# R\n\n## Training\nold\n\n## Data pipeline\nkeep\n"
    once = tr.replace_section(text, tr.SECTION, body)
    assert once.index(tr.SECTION) < once.index("## Data pipeline") and "keep" in once and "old" in once
    twice = tr.replace_section(once, tr.SECTION, body.replace("1 of 2", "2 of 2"))
    assert twice.count(tr.SECTION) == 1 and "2 of 2" in twice and "1 of 2" not in twice and twice.endswith("keep\n")


def test_gpu_ceiling_counts_and_bound_arithmetic(one_thread):
    """``benchmarks/suites/gpu_ceiling.py``: the per-sample counts come from a real step, and the bound adds up its parts."""
    spec = importlib.util.spec_from_file_location("ofa_gpu_ceiling", REPO / "benchmarks" / "suites" / "gpu_ceiling.py")
    ceiling = importlib.util.module_from_spec(spec)
    sys.modules["ofa_gpu_ceiling"] = ceiling
    spec.loader.exec_module(ceiling)
    gpu = sys.modules["gpu"]
    saved = dict(gpu.OVERRIDES)
    gpu.OVERRIDES.update(
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        vocab_size=300,
        max_source_positions=64,
        max_target_positions=64,
    )
    try:
        c = ceiling.count("tiny", 64, 6, 6)
    finally:
        gpu.OVERRIDES.clear()
        gpu.OVERRIDES.update(saved)
    assert c["flops"]["convolution"] > 0 and c["flops"]["linear"] > 0 and c["flops"]["attention"] > 0
    assert c["flops_total"] == sum(c["flops"].values())
    # ResNet-50 stages 1-3 at 64 px: the BatchNorms see 64·32² (stem) + 3 stages' bottlenecks; LayerNorms > 0
    assert c["batchnorm_elements"] > 64 * 32 * 32 and c["layernorm_elements"] > 0
    profile = {
        "kernel_share": {"matmul": 0.2, "convolution": 0.1, "elementwise": 0.7},
        "kernel_ms_per_step": 100.0,
        "batch4": {"step_s": 0.12, "mfu": 0.05},
    }
    b = ceiling.bound(c, profile, batch=4, peak=1e12)
    gemm = 4 * (c["flops"]["convolution"] + c["flops"]["linear"])
    bw = ceiling.H100_HBM * ceiling.HBM_EFFICIENCY
    assert b["parts_s"]["batchnorm (train mode, 8 bf16 passes)"] == pytest.approx(
        8 * 2 * c["batchnorm_elements"] * 4 / bw
    )
    row = b["rows"]["at the profiled rate"]
    assert row["gemm_rate_tflops"] == pytest.approx(gemm / 0.030 / 1e12)  # 30 % of 100 ms
    assert row["step_s"] == pytest.approx(0.030 + sum(b["parts_s"].values()))
    assert row["mfu"] == pytest.approx(4 * c["flops_total"] / row["step_s"] / 1e12)
    assert row["mfu_frozen_bn"] > row["mfu"]
    md = ceiling.markdown({"size": "tiny", "px": 64, "counts": c, "bound": b})
    assert "MFU ceiling" in md and "12 ms" not in md and "Measured (profile): 120 ms" in md
