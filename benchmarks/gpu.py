"""GPU benchmark of OFA-Lightning: one script, one run of under ten minutes on one GPU, no network, no installs.

Measures, with random weights and synthetic caption batches (480 px, 20 + 20 tokens):

1. **OFA-Base bf16 training step**: samples/s, achieved TFLOP/s (FLOPs of one step from
   ``torch.utils.flop_counter.FlopCounterMode``, forward + backward) and **MFU** against the
   device's dense bf16 peak (H100 SXM 989 TFLOP/s; target ≥ 45 %). bf16 autocast, fused AdamW,
   channels-last ResNet, vocabulary projection on the real target tokens only.
2. **Memory per sample**: peak ``torch.cuda.max_memory_allocated`` at two batch sizes; the slope
   is the memory one more sample costs, the intercept the fixed cost (weights, gradients, AdamW).
3. **Largest batch** that trains OFA-Large and OFA-Huge at 480 px with activation checkpointing
   (encoder/decoder layers and ResNet bottlenecks): doubling then bisection on out-of-memory.
4. **Caption generation throughput** (OFA-Base, bf16 autocast, beam 5, 20 tokens): images/s.
5. **Training-step variants** at the same batch, each with its samples/s, MFU (counted with the FLOPs of the
   default step, so that a variant doing redundant work is not flattered) and peak memory:
   ``model.attention_kernel=flex`` (the encoder's position biases and padding formed inside FlexAttention, no
   (B, H, S, S) tensors; ``ofa_lightning/model/flex.py``), the same with each layer compiled, with the layers and
   the ResNet trunk compiled, and with OFA's ``--freeze-resnet`` (FrozenBatchNorm2d: a recipe choice, reported
   for what BatchNorm costs). Before timing flex, a **parity check** compares its loss and every gradient with the default kernel's (fp32, TF32 off, same
   weights and batch); a failed check marks the variant rows.

Writes ``gpu_results.json`` and ``gpu_results.md`` into ``--out`` (default ``benchmarks/``;
``run.py`` includes the markdown in ``RESULTS.md``). Each part has a time budget so the whole
run stays under ``--budget-s`` (default 540 s).

``--dry-run`` runs the same code paths on the CPU with OFA-Tiny, 64 px images and tiny batches
(seconds; used by ``tests/test_perf_guards.py``); its default output folder is a temporary one. PyTorch's
FlexAttention has no CPU backward, so the dry run trains the flex variants through FlexAttention's eager reference
with that guard lifted (a logic check only) and does not compile.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

PAD, BOS, EOS = 1, 0, 2


# ---------------------------------------------------------------- set-up
def make_batch(batch: int, px: int, src: int, tgt: int, device, seed: int = 0, vocab: int = 50260) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch, src), generator=g)
    ids[:, 0], ids[:, -1] = BOS, EOS
    target = torch.randint(4, vocab, (batch, tgt), generator=g)
    target[:, -1] = EOS
    prev = torch.cat([torch.full((batch, 1), BOS), target[:, :-1]], dim=1)
    images = torch.randn(batch, 3, px, px, generator=g)
    return dict(input_ids=ids.to(device), patch_images=images.to(device),
                patch_masks=torch.ones(batch, dtype=torch.bool, device=device),
                prev=prev.to(device), target=target.to(device))


OVERRIDES: dict = {}  # OFAConfig overrides (the dry run shrinks the transformer and the vocabulary)


def build(size: str, device, checkpointing: bool = False, **overrides):
    from ofa_lightning.model import OFAModel

    torch.manual_seed(0)
    kwargs = dict(dropout=0.1, activation_checkpointing=checkpointing, checkpoint_resnet=checkpointing,
                  channels_last=True)
    model = OFAModel.from_name(size, **{**kwargs, **OVERRIDES, **overrides})
    return model.to(device)


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
    def __init__(self, model, batch: dict, device):
        self.model, self.batch, self.device = model.train(), batch, device
        fused = device.type == "cuda"
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused) if fused else \
            torch.optim.AdamW(model.parameters(), lr=1e-5)

    def __call__(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = loss_fn(self.model, self.batch, self.device)
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


# ---------------------------------------------------------------- parts
def part_train(cfg, device, log) -> dict:
    model = build(cfg.base_size, device)
    out = {"size": cfg.base_size, "px": cfg.px, "batch": cfg.train_batch, "tokens": f"{cfg.src} + {cfg.tgt}"}
    mem = {}
    for bs in (cfg.train_batch // 2, cfg.train_batch):
        step = Step(model, make_batch(bs, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab), device)
        reset_peak(device)
        t = timed(step, device, cfg.warmup, cfg.repeats)
        mem[bs] = peak_mem_gb(device)
        if bs == cfg.train_batch:
            flops = step_flops(model, step.batch, device)
            peak = peak_flops(device)
            out.update(step_s=t, samples_per_s=bs / t, flops_per_step=flops, achieved_tflops=flops / t / 1e12,
                       peak_tflops=None if peak is None else peak / 1e12,
                       mfu=None if peak is None else flops / t / peak, loss=step())
        del step
        log(f"train {cfg.base_size} batch {bs}: {t:.3f} s/step, peak {mem[bs]:.2f} GiB")
    lo, hi = cfg.train_batch // 2, cfg.train_batch
    per = (mem[hi] - mem[lo]) / (hi - lo)
    out.update(peak_mem_gb={str(k): v for k, v in mem.items()}, mem_per_sample_gb=per,
               fixed_mem_gb=mem[hi] - per * hi)
    del model
    return out


def fits(size: str, batch: int, cfg, device) -> bool:
    model = None
    try:
        model = build(size, device, checkpointing=True)
        step = Step(model, make_batch(batch, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab), device)
        step()
        sync(device)
        return True
    except (RuntimeError, torch.OutOfMemoryError) as exc:
        if not is_oom(exc):
            raise
        return False
    finally:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


def part_max_batch(size: str, cfg, device, log, deadline: float) -> dict:
    """Largest batch (doubling, then bisection) for which one checkpointed training step fits."""
    good, bad, bs = 0, None, cfg.max_batch_start
    while bad is None and time.perf_counter() < deadline and bs <= cfg.max_batch_cap:
        ok = fits(size, bs, cfg, device)
        log(f"max batch {size}: batch {bs} {'fits' if ok else 'OOM'}")
        if ok:
            good, bs = bs, bs * 2
        else:
            bad = bs
    while bad is not None and bad - good > max(1, good // 8) and time.perf_counter() < deadline:
        mid = (good + bad) // 2
        ok = fits(size, mid, cfg, device)
        log(f"max batch {size}: batch {mid} {'fits' if ok else 'OOM'}")
        good, bad = (mid, bad) if ok else (good, mid)
    return {"size": size, "px": cfg.px, "largest_batch_found": good, "first_oom_batch": bad,
            "capped": bad is None, "complete": bad is not None and bad - good <= max(1, good // 8)}


VARIANTS = {  # row label -> (OFAConfig overrides, what to torch.compile: "" | "layers" | "layers+trunk")
    # cheapest first: the compiled rows spend most of the part's time budget compiling
    "flex attention": (dict(attention_kernel="flex"), ""),
    "flex attention + frozen BatchNorm (OFA --freeze-resnet)": (dict(attention_kernel="flex", freeze_resnet_bn=True),
                                                                ""),
    "flex attention + compiled layers": (dict(attention_kernel="flex"), "layers"),
    "flex attention + compiled layers and ResNet trunk": (dict(attention_kernel="flex"), "layers+trunk"),
}


COMPILE_ALLOWANCE_S = {"": 45.0, "layers": 90.0, "layers+trunk": 180.0}  # first step incl. compiling, generous


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
    log(f"flex parity: loss {loss_d:.6f} vs {loss_f:.6f}, max rel grad diff {worst:.2e} ({worst_name}): "
        f"{'ok' if ok else 'FAILED'}")
    del dense, flex
    return {"batch": cfg.parity_batch, "loss_default": loss_d, "loss_flex": loss_f, "max_rel_grad_diff": worst,
            "worst_parameter": worst_name, "tolerance": cfg.parity_tol, "ok": ok}


def part_variants(cfg, device, log, dense_flops: float, deadline: float) -> list[dict]:
    """The training step of each of ``VARIANTS`` at the default step's batch; MFU with the default step's FLOPs."""
    rows = []
    peak = peak_flops(device)
    for label, (overrides, compiled) in VARIANTS.items():
        row = {"variant": label, **overrides, "compiled": compiled}
        if compiled and not cfg.compile_variants:
            rows.append({**row, "skipped": "no torch.compile in the dry run"})
            continue
        # a compile cannot be cut short: start a row only with its expected cost left (the run must stay well
        # inside a 10-minute device call, or nothing comes back)
        need = COMPILE_ALLOWANCE_S[compiled] if cfg.compile_variants else 0.0
        if time.perf_counter() + need > deadline:
            rows.append({**row, "skipped": f"time budget (needs ~{need:.0f} s)"})
            continue
        model = step = None
        try:
            model = build(cfg.base_size, device, **overrides)
            t0 = time.perf_counter()
            compile_parts(model, compiled)
            step = Step(model, make_batch(cfg.train_batch, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab), device)
            step()  # the first step compiles FlexAttention (and the layers): timed apart
            sync(device)
            first = time.perf_counter() - t0
            reset_peak(device)
            t = timed(step, device, max(cfg.warmup - 1, 0), cfg.repeats)
            row.update(step_s=t, samples_per_s=cfg.train_batch / t, first_step_s=first,
                       peak_mem_gb=peak_mem_gb(device), mfu=None if peak is None else dense_flops / t / peak,
                       loss=step())
            log(f"variant {label}: {t:.3f} s/step (first step {first:.1f} s), peak {row['peak_mem_gb']:.2f} GiB")
        except Exception as exc:  # one failing variant (say, a compile error) keeps the others' rows
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            log(f"variant {label}: failed: {row['error']}")
        rows.append(row)
        del step, model
        reset_peak(device)
    return rows


@torch.no_grad()
def part_generate(cfg, device, log) -> dict:
    from ofa_lightning.generation import GenerationConfig, generate

    model = build(cfg.base_size, device).eval()
    b = make_batch(cfg.gen_batch, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab)
    gcfg = GenerationConfig.preset("caption", beam_size=5, max_len_a=0.0, max_len_b=cfg.gen_tokens,
                                   min_len=cfg.gen_tokens, no_repeat_ngram_size=3)
    batch = {k: b[k] for k in ("input_ids", "patch_images", "patch_masks")}

    def run():
        with autocast(device):
            generate(model, batch, gcfg)

    t = timed(run, device, 1, cfg.gen_repeats)
    log(f"generate {cfg.base_size} batch {cfg.gen_batch}: {t:.3f} s/batch")
    return {"size": cfg.base_size, "px": cfg.px, "batch": cfg.gen_batch, "beam": 5, "tokens": cfg.gen_tokens,
            "s_per_batch": t, "images_per_s": cfg.gen_batch / t}


# ---------------------------------------------------------------- report
def markdown(res: dict) -> str:
    L = ["## GPU (`benchmarks/gpu.py`)", ""]
    L.append(f"{res['date']}; {res['device']}; torch {res['torch']}; total {res['runtime_s']:.0f} s"
             + (" — **dry run on CPU with OFA-Tiny and toy shapes: not GPU figures**" if res["dry_run"] else "") + ".")
    L.append("")
    t = res.get("train")
    if t:
        mfu = "–" if t.get("mfu") is None else f"{t['mfu']:.1%}"
        L.append("| metric | value |")
        L.append("|---|---:|")
        L.append(f"| OFA-{t['size'].capitalize()} bf16 training, {t['px']} px, batch {t['batch']}: samples/s | "
                 f"{t['samples_per_s']:.1f} |")
        L.append(f"| achieved TFLOP/s (FLOPs of one step / step time) | {t['achieved_tflops']:.1f} |")
        L.append(f"| MFU vs dense bf16 peak ({t['peak_tflops'] or '?'} TFLOP/s; target ≥ 45 % on H100) | {mfu} |")
        L.append(f"| memory per sample (GiB, slope of peak allocated) | {t['mem_per_sample_gb']:.3f} |")
        L.append(f"| fixed memory (weights, grads, AdamW; GiB) | {t['fixed_mem_gb']:.2f} |")
    for m in res.get("max_batch", []):
        note = "" if m["complete"] else (" (search capped)" if m["capped"] else " (search stopped by the time budget)")
        L.append(f"| largest batch, OFA-{m['size'].capitalize()} {m['px']} px, activation checkpointing | "
                 f"{m['largest_batch_found']}{note} |")
    g = res.get("generate")
    if g:
        L.append(f"| caption generation OFA-{g['size'].capitalize()}, beam {g['beam']} × {g['tokens']} tokens, "
                 f"batch {g['batch']}: images/s | {g['images_per_s']:.1f} |")
    par = res.get("flex_parity")
    if par:
        L.append(f"| flex attention vs default kernel (fp32, batch {par['batch']}): loss | "
                 f"{par['loss_flex']:.6f} vs {par['loss_default']:.6f} |")
        L.append(f"| flex attention vs default kernel: max \\|Δgrad\\| / max \\|grad\\| (tolerance "
                 f"{par['tolerance']:.0e}) | {par['max_rel_grad_diff']:.1e}{'' if par['ok'] else ' **FAILED**'} |")
    rows = res.get("variants")
    if rows:
        base_t = (t or {}).get("step_s")
        bad = par is not None and not par["ok"]
        L += ["", f"Training-step variants (OFA-{(t or {}).get('size', '?').capitalize()}, same batch; MFU counted "
                  "with the default step's FLOPs)" + (" — **flex failed its parity check**" if bad else "") + ":", "",
              "| variant | s/step | samples/s | vs default | MFU | peak GiB | first step (s) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        if t:
            L.append(f"| default (SDPA, dense bias) | {t['step_s']:.3f} | {t['samples_per_s']:.1f} | 1.00× | "
                     f"{'–' if t.get('mfu') is None else format(t['mfu'], '.1%')} | "
                     f"{t['peak_mem_gb'].get(str(t['batch']), float('nan')):.2f} | – |")
        for r in rows:
            if "skipped" in r or "error" in r:
                why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r['error']}"
                L.append(f"| {r['variant']} | {why} | | | | | |")
                continue
            ratio = f"{base_t / r['step_s']:.2f}×" if base_t else "–"
            mfu = "–" if r.get("mfu") is None else f"{r['mfu']:.1%}"
            L.append(f"| {r['variant']} | {r['step_s']:.3f} | {r['samples_per_s']:.1f} | {ratio} | {mfu} | "
                     f"{r['peak_mem_gb']:.2f} | {r['first_step_s']:.1f} |")
    for name, err in res.get("errors", {}).items():
        L.append(f"| {name} | failed: {err} |")
    return "\n".join(L) + "\n"


@contextlib.contextmanager
def flex_cpu_guards_lifted(active: bool):
    """Dry run only: let the flex variants train on the CPU through FlexAttention's eager reference (PyTorch and
    ``model/flex.py`` refuse a CPU backward; the reference has one). A logic check, not a supported mode; the
    guards are restored on exit (the dry run also runs inside the test process)."""
    if not active:
        yield
        return
    import torch.nn.attention.flex_attention as fa

    from ofa_lightning.model import flex

    saved = fa._validate_device, flex.refuse_cpu_backward
    fa._validate_device, flex.refuse_cpu_backward = (lambda *a, **k: None), (lambda q: None)
    try:
        yield
    finally:
        fa._validate_device, flex.refuse_cpu_backward = saved


def config(dry_run: bool) -> argparse.Namespace:
    if dry_run:
        return argparse.Namespace(base_size="tiny", large_sizes=("tiny",), px=32, src=6, tgt=6, train_batch=2,
                                  warmup=0, repeats=1, max_batch_start=1, max_batch_cap=2, gen_batch=2,
                                  gen_tokens=3, gen_repeats=1, vocab=300, parity_batch=2, parity_tol=1e-4,
                                  compile_variants=False,
                                  overrides=dict(d_model=32, encoder_layers=1, decoder_layers=1,
                                                 encoder_attention_heads=2, decoder_attention_heads=2,
                                                 encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=300,
                                                 max_source_positions=64, max_target_positions=64))
    return argparse.Namespace(base_size="base", large_sizes=("large", "huge"), px=480, src=20, tgt=20,
                              train_batch=32, warmup=3, repeats=10, max_batch_start=16, max_batch_cap=4096,
                              gen_batch=32, gen_tokens=20, gen_repeats=3, vocab=50260, parity_batch=2,
                              parity_tol=1e-3, compile_variants=True, overrides={})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, OFA-Tiny, toy shapes: checks the logic in seconds")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/, or a temporary one with --dry-run)")
    p.add_argument("--budget-s", type=float, default=540.0, help="time budget of the whole run")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    log = lambda m: print(f"[gpu {time.perf_counter() - t_start:6.1f}s] {m}", flush=True)  # noqa: E731
    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # toy shapes: one thread avoids OpenMP spinning on a busy machine
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        print("no GPU found: run on a machine with one, or use --dry-run", file=sys.stderr)
        return 2
    with flex_cpu_guards_lifted(args.dry_run):
        return run(args, device, t_start, log)


def run(args, device, t_start: float, log) -> int:
    cfg = config(args.dry_run)
    OVERRIDES.clear()
    OVERRIDES.update(cfg.overrides)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="ofa_gpu_dry_")) if args.dry_run else HERE)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": name, "torch": torch.__version__,
                 "dry_run": args.dry_run, "errors": {}}
    deadline = t_start + args.budget_s
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part: a run cut short still leaves what it measured
        res["runtime_s"] = time.perf_counter() - t_start
        (out / "gpu_results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        (out / "gpu_results.md").write_text(markdown(res))

    def attempt(name: str, part, *args, key: str | None = None) -> None:
        """Run one part; keep going when it fails (its error is reported), and save what there is so far."""
        try:
            value = part(*args)
            if key is None:
                res[name] = value
            else:
                res.setdefault(key, []).append(value)
        except Exception as exc:  # noqa: BLE001 - reported in the results, not hidden
            res["errors"][name] = f"{type(exc).__name__}: {exc}"[:300]
        save()

    attempt("train", part_train, cfg, device, log)
    attempt("flex_parity", part_flex_parity, cfg, device, log)
    if "train" in res:
        # at most 60 % of what is left (compiling takes most of it): generation and the largest-batch searches
        # need the rest (about 100 s on an H100)
        share = 0.6 * (deadline - time.perf_counter())
        attempt("variants", part_variants, cfg, device, log, res["train"]["flops_per_step"],
                time.perf_counter() + share)
    attempt("generate", part_generate, cfg, device, log)
    res["max_batch"] = []
    for i, size in enumerate(cfg.large_sizes):
        share = (deadline - time.perf_counter()) / (len(cfg.large_sizes) - i)
        attempt(f"max_batch_{size}", part_max_batch, size, cfg, device, log, time.perf_counter() + share,
                key="max_batch")
    log(f"wrote {out / 'gpu_results.json'} and {out / 'gpu_results.md'}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
