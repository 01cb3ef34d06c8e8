"""The ModelScope port of OFA on the GPU, beside ours: its training step and its beam-5 caption generation on the
same inputs, GPU and bf16 autocast, each through the port's own code.

The port is built from our size's config (``tests/modelscope_ref.py``, random init); its training step is
``benchmarks/harness/train_step.py``'s ``peer_loss`` (the port's forward, logits for every target position, cross-entropy
ignoring padding) with torch's default AdamW, as in the CPU benchmark. Generation: our model converted from the
port's weights (``benchmarks/harness/common.py``'s ``ours_from_peer``), so both search the same model; the port through its
fairseq-style ``SequenceGenerator``, ours through ``ofa_lightning.generation.generate``.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # the port's import warns about GenerationMixin

import torch  # noqa: E402
from gpu_parts import (  # noqa: E402
    OVERRIDES,
    autocast,
    generate_fn,
    is_oom,
    make_batch,
    peak_mem_gb,
    reset_peak,
    sync,
    timed,
)


def port_kwargs(size: str, dropout: float) -> dict:
    """ModelScope ``OFAConfig`` fields of our size ``size`` (with the run's overrides)."""
    from ofa_lightning.model.config import OFAConfig

    c = OFAConfig.from_name(size, **{**OVERRIDES, "dropout": dropout})
    return dict(
        vocab_size=c.vocab_size,
        d_model=c.d_model,
        encoder_layers=c.encoder_layers,
        decoder_layers=c.decoder_layers,
        encoder_attention_heads=c.encoder_attention_heads,
        decoder_attention_heads=c.decoder_attention_heads,
        encoder_ffn_dim=c.encoder_ffn_dim,
        decoder_ffn_dim=c.decoder_ffn_dim,
        resnet_type=c.resnet_type,
        dropout=c.dropout,
        attention_dropout=c.attention_dropout,
        activation_dropout=c.activation_dropout,
        max_position_embeddings=c.max_source_positions,
        token_bucket_size=c.token_bucket_size,
        image_bucket_size=c.image_bucket_size,
        attn_scale_factor=c.attn_scale_factor,
        code_image_size=c.code_image_size,
    )


def build_port(size: str, device, train: bool):
    import importlib.util

    if importlib.util.find_spec("modelscope") is None:
        raise ImportError("the ModelScope port is a dev dependency: pip install -e '.[dev]' (modelscope, transformers)")
    from modelscope_ref import build_ms_model

    model, _ = build_ms_model(port_kwargs(size, 0.1 if train else 0.0), seed=0)
    return model.train(train).to(device)


def as_batch(b: dict):
    from common import Batch

    return Batch(b["input_ids"], b["patch_images"], b["patch_masks"], b["prev"], b["target"])


class PortStep:
    """One optimisation step of the port: its forward and loss under bf16 autocast, backward, torch's default
    AdamW (the port ships no optimiser of its own)."""

    def __init__(self, model, batch: dict, device):
        from train_step import make_optimizer

        self.model, self.batch, self.device = model.train(), as_batch(batch), device
        self.opt = make_optimizer(model.parameters(), fused=False)

    def __call__(self) -> float:
        from train_step import peer_loss

        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device):
            loss = peer_loss(self.model, self.batch)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def part_port_train(cfg, device, log, ours: dict | None) -> dict:
    """The port's step at our default step's batch (half of it if that does not fit): samples/s, peak memory."""
    model = build_port(cfg.base_size, device, train=True)
    out = {"size": cfg.base_size, "px": cfg.px, "tokens": f"{cfg.src} + {cfg.tgt}", "oom_at": []}
    bs = cfg.train_batch
    while bs >= 1:
        step = None
        try:
            step = PortStep(model, make_batch(bs, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab), device)
            reset_peak(device)
            t = timed(step, device, cfg.port_warmup, cfg.port_repeats)
            mem = peak_mem_gb(device)
            out.update(
                batch=bs, step_s=t, samples_per_s=bs / t, peak_mem_gb=mem, peak_mem_per_sample_gb=mem / bs, loss=step()
            )
            log(f"port train {cfg.base_size} batch {bs}: {t:.3f} s/step, peak {mem:.2f} GiB")
            break
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if not is_oom(exc):
                raise
            out["oom_at"].append(bs)
            log(f"port train batch {bs}: out of memory, halving")
            del step
            model.zero_grad(set_to_none=True)
            reset_peak(device)
            bs //= 2
    if ours and "batch" in out:
        our_t = ours.get("step_s_at", {}).get(str(out["batch"]))
        if our_t:
            out["ours_step_s_same_batch"] = our_t
            out["speedup"] = out["step_s"] / our_t
    del model
    reset_peak(device)
    return out


def port_generate_fn(port, batch: dict, tokens: int, vocab: int, out: dict | None = None):
    """A call that generates beam-5 captions with the port's own ``SequenceGenerator`` under bf16 autocast."""
    from modelscope_ref import ms_generate, ms_sequence_generator

    gen = ms_sequence_generator(
        vocab_size=vocab, beam_size=5, max_len_a=0, max_len_b=tokens, min_len=tokens, no_repeat_ngram_size=3
    )
    device = batch["input_ids"].device

    def run():
        with autocast(device):
            hyps = ms_generate(gen, port, batch["input_ids"], batch["patch_images"], batch["patch_masks"])
        if out is not None:
            out["port"] = hyps

    return run


def part_generate(cfg, device, log) -> dict:
    """Beam-5 captions of one batch, ours and the port's, same weights and inputs: images/s of each, and how many
    best hypotheses agree (bf16 kernels may order near-ties differently: reported, not asserted). Returns the two
    calls too (``calls``: for the profile of ours), popped by the driver."""
    from common import ours_from_peer

    port = build_port(cfg.base_size, torch.device("cpu"), train=False)
    ours = ours_from_peer(port).to(device).eval()
    port.to(device)
    b = make_batch(cfg.gen_batch, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab)
    hyps: dict = {}
    fns = {
        "ours": generate_fn(ours, b, device, cfg.gen_tokens, hyps),
        "port": port_generate_fn(port, b, cfg.gen_tokens, cfg.vocab, hyps),
    }
    res: dict = {"size": cfg.base_size, "px": cfg.px, "batch": cfg.gen_batch, "beam": 5, "tokens": cfg.gen_tokens}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()  # warm-up (and, for ours, the cuDNN/cuBLAS autotuning)
        sync(device)
        first = time.perf_counter() - t0
        repeats = cfg.gen_repeats if name == "ours" else cfg.port_gen_repeats
        t = timed(fn, device, 0, repeats)
        res[name] = {"s_per_batch": t, "images_per_s": cfg.gen_batch / t, "first_call_s": first}
        log(f"generate {name} {cfg.base_size} batch {cfg.gen_batch}: {t:.3f} s/batch")
    same = sum(
        bool(torch.equal(hyps["ours"][i][0].tokens.cpu(), hyps["port"][i][0]["tokens"].cpu()))
        for i in range(cfg.gen_batch)
    )
    res["same_best_tokens"] = f"{same} of {cfg.gen_batch}"
    res["speedup"] = res["port"]["s_per_batch"] / res["ours"]["s_per_batch"]
    res["calls"] = fns
    return res


def part_port_profile(cfg, device, log, profile_calls, batch: int) -> dict:
    """Kernel-time breakdown of the port's training step at ``batch`` (the batch it was timed at)."""
    model = build_port(cfg.base_size, device, train=True)
    step = PortStep(model, make_batch(batch, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab), device)
    prof = profile_calls(step, device, cfg.profile_steps)
    log(f"port profile: {prof['kernel_ms_per_step']:.1f} ms of kernels per step")
    del step, model
    reset_peak(device)
    return prof


__all__ = ["build_port", "part_generate", "part_port_profile", "part_port_train", "port_kwargs", "PortStep"]
