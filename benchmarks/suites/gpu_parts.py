"""The measured parts of ``gpu.py`` for our model: set-up, the default training step, its variants, the flex parity
check and caption generation. ``gpu_ceiling.py`` and ``gpu_profile.py`` build their steps from the same helpers
(through ``gpu``, which re-exports them)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

PAD, BOS, EOS = 1, 0, 2
OVERRIDES: dict = {}  # OFAConfig overrides (the dry run shrinks the transformer and the vocabulary)


# ---------------------------------------------------------------- set-up
def make_batch(batch: int, px: int, src: int, tgt: int, device, seed: int = 0, vocab: int = 50260) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch, src), generator=g)
    ids[:, 0], ids[:, -1] = BOS, EOS
    target = torch.randint(4, vocab, (batch, tgt), generator=g)
    target[:, -1] = EOS
    prev = torch.cat([torch.full((batch, 1), BOS), target[:, :-1]], dim=1)
    images = torch.randn(batch, 3, px, px, generator=g)
    return dict(
        input_ids=ids.to(device),
        patch_images=images.to(device),
        patch_masks=torch.ones(batch, dtype=torch.bool, device=device),
        prev=prev.to(device),
        target=target.to(device),
    )


def build(size: str, device, checkpointing: bool = False, **overrides):
    from dataclasses import fields

    from ofa_lightning.model import OFAConfig
    from ofa_lightning.speed import SpeedConfig, build_model

    torch.manual_seed(0)
    options = {**OVERRIDES, **overrides}  # OFAConfig fields and model.speed fields (attention_kernel, ...)
    speed_names = {f.name for f in fields(SpeedConfig)}
    speed = dict(
        activation_checkpointing=checkpointing, checkpoint_resnet=str(bool(checkpointing)).lower(), channels_last=True
    )
    speed = SpeedConfig(**{**speed, **{k: v for k, v in options.items() if k in speed_names}})
    config = OFAConfig.from_name(size, **{"dropout": 0.1, **{k: v for k, v in options.items() if k not in speed_names}})
    return build_model(config, speed).to(device)


def autocast(device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def loss_fn(model, b: dict, device, bf16: bool = True) -> torch.Tensor:
    """Training loss of a batch; ``bf16=False``: in fp32 (the flex parity check)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        enc = model.encode(b["input_ids"], b["patch_images"], b["patch_masks"])
        keep = b["target"].ne(PAD)
        logits = model.project(model.decode_hidden(b["prev"], enc)[keep])
    return F.cross_entropy(logits.float(), b["target"][keep])


class Step:
    """One optimisation step of our model (fused AdamW on a GPU); ``loss`` replaces :func:`loss_fn` (the FSDP
    wrapper's forward)."""

    def __init__(self, model, batch: dict, device, loss=None, params=None):
        self.model, self.batch, self.device = model.train(), batch, device
        self.loss = loss or (lambda: loss_fn(self.model, self.batch, self.device))
        params = list(params if params is not None else model.parameters())
        fused = device.type == "cuda"
        self.opt = torch.optim.AdamW(params, lr=1e-5, fused=True) if fused else torch.optim.AdamW(params, lr=1e-5)

    def __call__(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def step_flops(model, batch: dict, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(model, batch, device).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def peak_flops(device) -> float | None:
    from ofa_lightning.training.callbacks.throughput import peak_flops_for

    return peak_flops_for(device, "bf16-mixed")


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mem_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return float("nan")


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


# ---------------------------------------------------------------- the default step
def part_train(cfg, device, log) -> dict:
    model = build(cfg.base_size, device)
    out = {
        "size": cfg.base_size,
        "px": cfg.px,
        "batch": cfg.train_batch,
        "tokens": f"{cfg.src} + {cfg.tgt}",
        "step_s_at": {},
    }
    mem = {}
    for bs in (cfg.train_batch // 2, cfg.train_batch):
        step = Step(model, make_batch(bs, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab), device)
        reset_peak(device)
        t = timed(step, device, cfg.warmup, cfg.repeats)
        mem[bs] = peak_mem_gb(device)
        out["step_s_at"][str(bs)] = t
        if bs == cfg.train_batch:
            flops = step_flops(model, step.batch, device)
            peak = peak_flops(device)
            out.update(
                step_s=t,
                samples_per_s=bs / t,
                flops_per_step=flops,
                achieved_tflops=flops / t / 1e12,
                peak_tflops=None if peak is None else peak / 1e12,
                mfu=None if peak is None else flops / t / peak,
                loss=step(),
            )
        del step
        log(f"train {cfg.base_size} batch {bs}: {t:.3f} s/step, peak {mem[bs]:.2f} GiB")
    lo, hi = cfg.train_batch // 2, cfg.train_batch
    per = (mem[hi] - mem[lo]) / (hi - lo)
    out.update(
        peak_mem_gb={str(k): v for k, v in mem.items()},
        mem_per_sample_gb=per,
        fixed_mem_gb=mem[hi] - per * hi,
        peak_mem_per_sample_gb=mem[hi] / hi,
    )
    del model
    return out


# ---------------------------------------------------------------- variants of the step
def fused_layer_norm(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """A LayerNorm that, under autocast, runs in the autocast dtype: one PyTorch kernel reading and writing bf16
    (statistics in fp32 inside the kernel), instead of CUDA autocast's cast to fp32, an fp32 LayerNorm and an fp32
    output that the next matmul casts back. Without autocast, or on the CPU (whose autocast already keeps bf16
    LayerNorms in bf16), it is the eager ``nn.LayerNorm`` itself."""
    dev = x.device.type
    if dev != "cuda" or not torch.is_autocast_enabled(dev):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
    return layer_norm_in(self, x, torch.get_autocast_dtype(dev))


def layer_norm_in(m: nn.LayerNorm, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``m(x)`` computed in ``dtype``, outside autocast: input, weight and bias cast to it, output in it."""
    w = None if m.weight is None else m.weight.to(dtype)
    b = None if m.bias is None else m.bias.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        return F.layer_norm(x.to(dtype), m.normalized_shape, w, b, m.eps)


def fuse_norms(model) -> int:
    """Every ``nn.LayerNorm`` of ``model`` through :func:`fused_layer_norm`; returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.forward = fused_layer_norm.__get__(m)
            n += 1
    return n


def compile_parts(model, what: str) -> None:
    """``torch.compile`` each encoder/decoder layer ("layers") and also the ResNet trunk's forward ("layers+trunk":
    Inductor can fuse training-mode BatchNorm, ReLU and the residual adds around cuDNN's convolutions)."""
    if not what:
        return
    for layer in [*model.encoder.layers, *model.decoder.layers]:
        layer.compile()
    if "trunk" in what:
        trunk = model.encoder.embed_images
        trunk.forward_features = torch.compile(trunk.forward_features)


# label -> OFAConfig overrides, what to torch.compile ("" | "layers" | "layers+trunk"), fused LayerNorms, and the
# seconds its first step may take (compiling included; generous). Cheapest first: the compiled rows spend most of
# the part's time budget compiling.
VARIANTS = {
    "ResNet in NCHW (channels-last off)": (dict(channels_last=False), "", False, 20.0),
    "fused LayerNorms (bf16 in and out)": ({}, "", True, 20.0),
    "flex attention": (dict(attention_kernel="flex"), "", False, 60.0),
    "flex attention + frozen BatchNorm (OFA --freeze-resnet)": (
        dict(attention_kernel="flex", freeze_resnet_bn=True),
        "",
        False,
        30.0,
    ),
    "flex attention + fused LayerNorms": (dict(attention_kernel="flex"), "", True, 30.0),
    "flex attention + compiled layers": (dict(attention_kernel="flex"), "layers", False, 90.0),
    "flex attention + compiled layers and ResNet trunk": (dict(attention_kernel="flex"), "layers+trunk", False, 180.0),
}


def grads_of(model, batch: dict, device) -> tuple[float, dict]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch, device, bf16=False)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def part_flex_parity(cfg, device, log) -> dict:
    """Loss and every gradient of ``attention_kernel=flex`` against the default kernel: same weights, same batch,
    fp32 with TF32 off, no dropout. ``max_rel_grad_diff``: the largest |Δgrad| over all parameters divided by the
    largest |grad| (gradients that are zero in exact arithmetic, such as the key biases', stay comparable)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        dense = build(cfg.base_size, device, dropout=0.0).train()
        flex = build(cfg.base_size, device, dropout=0.0, attention_kernel="flex").train()
        flex.load_state_dict(dense.state_dict())
        b = make_batch(cfg.parity_batch, cfg.px, cfg.src, cfg.tgt, device, seed=1, vocab=cfg.vocab)
        b["input_ids"][-1, -3:] = PAD  # padded text keys too
        loss_d, grads_d = grads_of(dense, b, device)
        loss_f, grads_f = grads_of(flex, b, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    scale = max(float(g.abs().max()) for g in grads_d.values())
    worst, worst_name = 0.0, None
    for name, g in grads_d.items():
        if name not in grads_f:
            worst, worst_name = float("inf"), f"{name} (no gradient under flex)"
            break
        d = float((grads_f[name] - g).abs().max()) / scale
        if d > worst:
            worst, worst_name = d, name
    ok = abs(loss_f - loss_d) <= 1e-4 * max(1.0, abs(loss_d)) and worst <= cfg.parity_tol
    log(
        f"flex parity: loss {loss_d:.6f} vs {loss_f:.6f}, max rel grad diff {worst:.2e} ({worst_name}): "
        f"{'ok' if ok else 'FAILED'}"
    )
    del dense, flex
    return {
        "batch": cfg.parity_batch,
        "loss_default": loss_d,
        "loss_flex": loss_f,
        "max_rel_grad_diff": worst,
        "worst_parameter": worst_name,
        "tolerance": cfg.parity_tol,
        "ok": ok,
    }


def part_variants(cfg, device, log, dense_flops: float, deadline: float) -> list[dict]:
    """The training step of each of ``VARIANTS`` at the default step's batch; MFU with the default step's FLOPs."""
    rows = []
    peak = peak_flops(device)
    for label, (overrides, compiled, fused, allowance) in VARIANTS.items():
        row = {"variant": label, **overrides, "compiled": compiled, "fused_layernorms": fused}
        if compiled and not cfg.compile_variants:
            rows.append(
                {
                    **row,
                    "skipped": "no torch.compile in the dry run (tests/test_gpu_benchmark.py compares "
                    "the compiled layers and trunk with eager on the CPU)",
                }
            )
            continue
        # a compile cannot be cut short: start a row only with its expected cost left (the run must stay well
        # inside a 10-minute device call, or nothing comes back)
        need = allowance if cfg.compile_variants else 0.0
        if time.perf_counter() + need > deadline:
            rows.append({**row, "skipped": f"time budget (needs ~{need:.0f} s)"})
            continue
        model = step = None
        try:
            model = build(cfg.base_size, device, **overrides)
            t0 = time.perf_counter()
            if fused:
                row["layernorms_fused"] = fuse_norms(model)
            compile_parts(model, compiled)
            step = Step(model, make_batch(cfg.train_batch, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab), device)
            step()  # the first step compiles FlexAttention (and the layers): timed apart
            sync(device)
            first = time.perf_counter() - t0
            reset_peak(device)
            t = timed(step, device, max(cfg.warmup - 1, 0), cfg.repeats)
            row.update(
                step_s=t,
                samples_per_s=cfg.train_batch / t,
                first_step_s=first,
                peak_mem_gb=peak_mem_gb(device),
                mfu=None if peak is None else dense_flops / t / peak,
                loss=step(),
            )
            log(f"variant {label}: {t:.3f} s/step (first step {first:.1f} s), peak {row['peak_mem_gb']:.2f} GiB")
        except Exception as exc:  # one failing variant (say, a compile error) keeps the others' rows
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            log(f"variant {label}: failed: {row['error']}")
        rows.append(row)
        del step, model
        reset_peak(device)
    return rows


# ---------------------------------------------------------------- generation
def caption_config(tokens: int):
    import ofa_lightning.tasks  # noqa: F401  (the tasks register their decoding presets)
    from ofa_lightning.generation import GenerationConfig

    return GenerationConfig.preset(
        "caption", beam_size=5, max_len_a=0.0, max_len_b=tokens, min_len=tokens, no_repeat_ngram_size=3
    )


def generate_fn(model, batch: dict, device, tokens: int, out: dict | None = None):
    """A call that generates beam-5 captions of ``batch`` under bf16 autocast (hypotheses into ``out['ours']``)."""
    from ofa_lightning.generation import generate

    gcfg = caption_config(tokens)
    inputs = {k: batch[k] for k in ("input_ids", "patch_images", "patch_masks")}

    @torch.no_grad()
    def run():
        with autocast(device):
            hyps = generate(model, inputs, gcfg)
        if out is not None:
            out["ours"] = hyps

    return run
