"""GPU benchmark of OFA-Lightning against the ModelScope port: one script, one run of under ten minutes on one GPU,
no network, no installs (the port comes from the dev dependencies: ``pip install -e '.[dev]'``).

Measures, in one run, with random weights and synthetic caption batches (480 px, 20 + 20 tokens, bf16 autocast):

1. **Our OFA-Base training step** (default configuration: SDPA attention with the dense bias, channels-last ResNet,
   fused AdamW, vocabulary projection on the real target tokens only): samples/s, FLOPs of the step from
   ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward), **MFU** against the device's dense bf16 peak,
   peak memory per sample, and the slope and intercept of peak memory over two batch sizes.
2. **The port's training step** on the same inputs and GPU (``gpu_port.py``: its own forward and loss, bf16
   autocast, torch's default AdamW): samples/s and peak memory per sample; ratio ours / port.
3. **Beam-5 caption generation** (20 tokens, no-repeat-3) of both, ours converted from the port's weights:
   images/s and the ratio.
4. **Kernel profiles** (``torch.profiler``) of both training steps and of our generation, and the targets with,
   for each one missed, **what bounds it** (``gpu_bounds.py``: this run's profile and the lower bound on the
   step of ``gpu_ceiling.py``): MFU ≥ 35 %, training ≥ 3× the port, generation ≥ 5× the port.
5. **Training-step variants** at the same batch (``gpu_parts.VARIANTS``): the ResNet in NCHW (what channels-last
   buys), fused LayerNorms (bf16 in and out, no fp32 casts), ``model.speed.attention_kernel=flex`` (after a **parity
   check** of its loss and every gradient against the default kernel in fp32), flex with OFA's frozen BatchNorm
   (``--freeze-resnet``: a recipe change, reported for what BatchNorm costs), flex with fused LayerNorms, and flex
   with the layers (and the ResNet trunk) compiled by ``torch.compile``. MFU of every row uses the default step's
   FLOPs, so that a variant doing redundant work is not flattered.
6. **Largest batch** that trains OFA-Large and OFA-Huge at 480 px with activation checkpointing, and with FSDP
   as ``trainer=fsdp`` sets it up, on the one card (``gpu_capacity.py``).

Writes ``gpu_results.json`` and ``gpu_results.md`` into ``--out`` (default ``benchmarks/results/``; ``run.py`` includes the
markdown in ``RESULTS.md``) after every part, so a run cut short keeps what it measured. Each part has a time
share so that the run ends within ``--budget-s`` (default 480 s); a watchdog ends the process at
``--hard-limit-s`` (default 570 s) whatever is running. ``--parts`` runs only some parts (say, again after one
failed).

``--dry-run`` runs every part on the CPU with OFA-Tiny shrunk to toy shapes (seconds; ``tests/test_gpu_benchmark.py``):
PyTorch's FlexAttention has no CPU backward, so the flex rows train through its eager reference with that guard
lifted (a logic check only); the compiled rows are skipped (the test compares the compiled layers and trunk with
eager on the CPU); FSDP refuses the CPU, which its row reports. Its default output folder is a temporary one.

On a machine that lacks the port's packages and has no network, bring their wheels along (matching its Python),
made beforehand with ``pip download --no-deps -d .whl modelscope modelscope-hub "transformers<4.58" "tokenizers<0.23"
"huggingface-hub<1.0"`` (plus ``cryptography cffi pycparser`` when missing), then::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    python3 benchmarks/suites/gpu.py --out "$OUT" --budget-s 460 --hard-limit-s 545
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

T_IMPORT = time.perf_counter()
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / "benchmarks" / "results"
for _p in (REPO, HERE.parent / "harness", HERE, REPO / "tests"):  # ofa_lightning, the harness, this suite, the port
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import torch  # noqa: E402
from gpu_parts import (  # noqa: E402,F401 - re-exported for gpu_ceiling.py and gpu_profile.py
    BOS,
    EOS,
    OVERRIDES,
    PAD,
    VARIANTS,
    Step,
    build,
    compile_parts,
    fuse_norms,
    loss_fn,
    make_batch,
    peak_flops,
    reset_peak,
    step_flops,
    sync,
    timed,
)

__all__ = [
    "BOS",
    "EOS",
    "OVERRIDES",
    "PAD",
    "VARIANTS",
    "Step",
    "build",
    "compile_parts",
    "fuse_norms",
    "loss_fn",
    "make_batch",
    "peak_flops",
    "reset_peak",
    "step_flops",
    "sync",
    "timed",
    "config",
    "main",
]


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    for name in ("triton", "modelscope", "transformers", "pytorch-lightning"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


@contextlib.contextmanager
def flex_cpu_guards_lifted(active: bool):
    """Dry run only: let the flex variants train on the CPU through FlexAttention's eager reference (PyTorch and
    ``speed/flex.py`` refuse a CPU backward; the reference has one). A logic check, not a supported mode; the
    guards are restored on exit (the dry run also runs inside the test process)."""
    if not active:
        yield
        return
    import torch.nn.attention.flex_attention as fa

    from ofa_lightning.speed import flex

    saved = fa._validate_device, flex.refuse_cpu_backward
    fa._validate_device, flex.refuse_cpu_backward = (lambda *a, **k: None), (lambda q: None)
    try:
        yield
    finally:
        fa._validate_device, flex.refuse_cpu_backward = saved


# the parts --parts can pick, in the order they run (a part that needs another one's result is skipped without it)
PARTS = ("train", "profile", "port", "generate", "targets", "flex_parity", "variants", "max_batch")
PART_OF = {"port_train": "port", "port_profile": "port", "generate_profile": "generate"}


def config(dry_run: bool) -> argparse.Namespace:
    common = dict(parity_batch=2, profile_steps=2)
    if dry_run:
        return argparse.Namespace(
            **common,
            base_size="tiny",
            large_sizes=("tiny",),
            px=32,
            src=6,
            tgt=6,
            train_batch=2,
            warmup=0,
            repeats=1,
            port_warmup=0,
            port_repeats=1,
            max_batch_start=1,
            max_batch_cap=2,
            gen_batch=2,
            gen_tokens=3,
            gen_repeats=1,
            port_gen_repeats=1,
            vocab=300,
            parity_tol=1e-4,
            compile_variants=False,
            max_batch_reserve_s=0.0,
            overrides=dict(
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
            ),
        )
    return argparse.Namespace(
        **common,
        base_size="base",
        large_sizes=("large", "huge"),
        px=480,
        src=20,
        tgt=20,
        train_batch=32,
        warmup=3,
        repeats=10,
        port_warmup=2,
        port_repeats=5,
        max_batch_start=16,
        max_batch_cap=4096,
        gen_batch=32,
        gen_tokens=20,
        gen_repeats=3,
        port_gen_repeats=2,
        vocab=50260,
        parity_tol=1e-3,
        compile_variants=True,
        max_batch_reserve_s=150.0,
        overrides={},
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, OFA-Tiny, toy shapes: checks the logic in seconds")
    p.add_argument(
        "--out", default=None, help="output folder (default benchmarks/results/, or a temporary one with --dry-run)"
    )
    p.add_argument("--budget-s", type=float, default=480.0, help="time the parts share (from the script's start)")
    p.add_argument(
        "--hard-limit-s",
        type=float,
        default=570.0,
        help="the watchdog ends the process here, whatever runs (results are saved after each part)",
    )
    p.add_argument("--parts", default="all", help=f"comma list of the parts to run (default all): {', '.join(PARTS)}")
    args = p.parse_args(argv)
    unknown = set() if args.parts == "all" else set(args.parts.split(",")) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    t_start = T_IMPORT if __name__ == "__main__" else time.perf_counter()
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

    def hard_stop() -> None:
        print(
            f"[gpu] hard limit of {args.hard_limit_s:.0f} s reached: stopping; the results saved so far stay",
            file=sys.stderr,
            flush=True,
        )
        os._exit(3)

    watchdog = threading.Timer(max(1.0, args.hard_limit_s - (time.perf_counter() - t_start)), hard_stop)
    watchdog.daemon = True
    watchdog.start()
    saved = dict(OVERRIDES)
    try:
        with flex_cpu_guards_lifted(args.dry_run):
            return run(args, device, t_start, log)
    finally:
        watchdog.cancel()
        OVERRIDES.clear()
        OVERRIDES.update(saved)


def run(args, device, t_start: float, log) -> int:
    from gpu_bounds import part_targets, profile_calls
    from gpu_capacity import part_max_batch
    from gpu_parts import part_flex_parity, part_train, part_variants
    from gpu_port import part_generate, part_port_profile, part_port_train
    from gpu_report import markdown

    cfg = config(args.dry_run)
    parts = set(PARTS if args.parts == "all" else args.parts.split(","))
    OVERRIDES.clear()
    OVERRIDES.update(cfg.overrides)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="ofa_gpu_dry_")) if args.dry_run else RESULTS)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    res: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": name,
        "versions": versions(),
        "dry_run": args.dry_run,
        "budget_s": args.budget_s,
        "errors": {},
    }
    deadline = t_start + args.budget_s
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part: a run cut short still leaves what it measured
        res["runtime_s"] = time.perf_counter() - t_start
        (out / "gpu_results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        (out / "gpu_results.md").write_text(markdown(res))

    def attempt(key: str, part, *a) -> None:
        """Run one part; keep going when it fails (its error is reported), and save what there is so far."""
        if PART_OF.get(key, key) not in parts:
            return
        try:
            res[key] = part(*a)
        except Exception as exc:  # noqa: BLE001 - reported in the results, not hidden
            res["errors"][key] = f"{type(exc).__name__}: {exc}"[:300]
            log(f"{key}: failed: {res['errors'][key]}")
        save()

    def profile_ours() -> dict:
        model = build(cfg.base_size, device)
        step = Step(model, make_batch(cfg.train_batch, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab), device)
        prof = profile_calls(step, device, cfg.profile_steps)
        log(
            f"profile: {prof['kernel_ms_per_step']:.1f} ms of kernels per step: "
            + ", ".join(f"{k} {100 * v:.0f} %" for k, v in list(prof["kernel_share"].items())[:4])
        )
        del step, model
        reset_peak(device)
        return prof

    attempt("train", part_train, cfg, device, log)
    attempt("profile", profile_ours)
    attempt("port_train", part_port_train, cfg, device, log, res.get("train"))
    if "batch" in res.get("port_train", {}):
        attempt("port_profile", part_port_profile, cfg, device, log, profile_calls, res["port_train"]["batch"])
    calls: dict = {}

    def generate() -> dict:
        r = part_generate(cfg, device, log)
        calls.update(r.pop("calls"))
        return r

    attempt("generate", generate)
    if calls:
        attempt("generate_profile", profile_calls, calls["ours"], device, 1)
    calls.clear()
    reset_peak(device)
    attempt("targets", part_targets, res, cfg, peak_flops(device), log)
    attempt("flex_parity", part_flex_parity, cfg, device, log)
    if "train" in res:
        # at most 60 % of what is left (compiling takes most of it), and the largest-batch searches keep theirs
        left = deadline - time.perf_counter()
        share = left if "max_batch" not in parts else max(0.0, min(0.6 * left, left - cfg.max_batch_reserve_s))
        attempt(
            "variants", part_variants, cfg, device, log, res["train"]["flops_per_step"], time.perf_counter() + share
        )
    elif "variants" in parts:
        res["not_run"] = {"variants": "their MFU needs the default step's FLOPs: part train did not run or failed"}
        log(f"variants: not run: {res['not_run']['variants']}")
    res["max_batch"] = []
    for i, size in enumerate(cfg.large_sizes if "max_batch" in parts else ()):
        share = (deadline - time.perf_counter()) / (len(cfg.large_sizes) - i)
        try:
            res["max_batch"] += part_max_batch(size, cfg, device, log, time.perf_counter() + share)
        except Exception as exc:  # noqa: BLE001 - reported in the results, not hidden
            res["errors"][f"max_batch_{size}"] = f"{type(exc).__name__}: {exc}"[:300]
            log(f"max batch {size}: failed: {res['errors'][f'max_batch_{size}']}")
        save()
    save()
    log(f"wrote {out / 'gpu_results.json'} and {out / 'gpu_results.md'}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
