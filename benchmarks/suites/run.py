"""OFA-Lightning vs ModelScope's OFA port: training, encoder and beam-search speed on CPU.

``make bench`` runs this file. For OFA-Tiny and OFA-Medium (batch 8, 256 px
images, 20 source + 20 target tokens, 2 threads, fp32, random init) it measures
in one run, for our model and for the port:

1. ``train_samples_per_s`` — forward + backward + AdamW step (median over timed steps after warm-up);
2. ``train_peak_rss_mb``   — peak RSS (``ru_maxrss``) of a fresh child process running only that loop;
3. ``encoder_s``           — encoder forward latency per batch (eval, no_grad);
4. ``beam5_s``             — beam 5, exactly 20 generated tokens, no-repeat 3, per batch
   (ours: KV-cached generator; port: ModelScope ``SequenceGenerator``).

It also profiles one tiny training step (component timers + FLOP counts) and
measures, on tiny, what each training-step optimisation of ``train_step.py``
buys (time and peak memory, each variant in its own child process).

Outputs (``--out``, default ``benchmarks/results/``): ``results.json`` (the table),
``details.json`` (every timing, the ablation, the profile, the machine),
``RESULTS.md`` (report). Progress goes to stdout.

The machine may be shared: each timed call records how much CPU other
processes used meanwhile (see ``contention.py``); medians use the undisturbed
calls, and the report says when too few were undisturbed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # the port's import warns about GenerationMixin
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

HERE = Path(__file__).resolve().parent
for _p in (HERE.parent / "harness", HERE):  # the shared harness, then this suite's modules
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import torch  # noqa: E402
from common import (  # noqa: E402
    BATCH,
    IMAGE_PX,
    RESULTS_DIR,
    SRC_LEN,
    TGT_LEN,
    THREADS,
    build_ours,
    build_peer,
    current_rss_mb,
    find_tcmalloc,
    log,
    make_batch,
    ours_from_peer,
    peak_rss_mb,
    setup_threads,
)
from contention import CLEAN_OTHER_FRAC, timed, timed_interleaved  # noqa: E402
from machine import cpu_model  # noqa: E402

TARGETS = {  # name -> (minimum ratio, how the ratio is formed)
    "train_samples_per_s": 2.0,
    "train_peak_rss_mb": 0.6,  # maximum ours/peer
    "encoder_s": 1.3,
    "beam5_s": 5.0,
    "vqa_trie_beam_s": None,  # timed as the issue asks; no target
    "vqa_allcand_s": None,
}
UNITS = {
    "train_samples_per_s": "samples/s",
    "train_peak_rss_mb": "MB",
    "encoder_s": "s/batch",
    "beam5_s": "s/batch",
    "vqa_trie_beam_s": "s/batch",
    "vqa_allcand_s": "s/sample",
}
# The memory-lean training configuration: CPU bf16 autocast + ResNet stage checkpointing (the model option
# checkpoint_resnet="stages") + gperftools' tcmalloc as the allocator (LD_PRELOAD, read when the process starts;
# benchmarks/harness/get_tcmalloc.sh finds or fetches it). glibc keeps ~0.2-0.3 GB of freed activation memory resident in
# holes of its heap; tcmalloc reuses it. Without tcmalloc the lean rows run on glibc and RESULTS.md says so.
LEAN_OPTIONS = "default,bf16,resnet_stage_checkpoint"
# Leaner still, for more time: the encoder/decoder layers recomputed too (model.speed.activation_checkpointing), which makes
# the trunk's backward the peak, so the trunk's stages are cut finer (checkpoint_resnet_segments=[1, 2, 3]).
# On a 2-core Intel CPU: OFA-Tiny ~1.77-1.80 GB against ~1.88 GB, at +5-10 % time.
LEANEST_OPTIONS = LEAN_OPTIONS + ",layer_checkpoint,fine_segments"
LEAN_CONFIGS = {"lean": LEAN_OPTIONS, "leanest": LEANEST_OPTIONS}  # what train_rounds.py repeats
TCMALLOC = "tcmalloc"  # environment placeholder, resolved by resolve_env()
MMAP_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "1048576"}
TRAIN_CONFIGS = [  # (label suffix for the results table, options, environment)
    ("", "default", {}),
    ("bf16", "default,bf16", TCMALLOC),
    ("bf16+ckpt", LEAN_OPTIONS, TCMALLOC),
    ("bf16+ckpt+layers", LEANEST_OPTIONS, TCMALLOC),
]
PEAK_GFLOPS = 300.0  # nominal fp32 limit of the 2 cores quoted in the brief

# Tiny-only ablation of the training step: (label, TrainOptions spec[, environment]).
ABLATION = [
    ("baseline: forward() → full logits → CE (ignore pad), NCHW, foreach AdamW", "baseline"),
    ("+ loss on non-pad target rows only (decode_hidden → select → project)", "select_targets"),
    ("+ channels-last ResNet", "select_targets,channels_last"),
    ("+ fused AdamW", "select_targets,channels_last,fused_adamw"),
    ("+ fused cross-entropy (= our default step)", "default"),
    ("default + ResNet bottleneck checkpointing (BN-safe recompute)", "default,resnet_checkpoint"),
    ("default + bf16 autocast", "default,bf16"),
    ("default + bf16 autocast + tcmalloc", "default,bf16", TCMALLOC),
    ("default + bf16 autocast + ResNet bottleneck checkpointing", "default,bf16,resnet_checkpoint"),
    ("default + bf16 autocast + ResNet stage checkpointing", LEAN_OPTIONS),
    (
        "default + bf16 + ResNet stage checkpointing + tcmalloc, plain cross-entropy",
        LEAN_OPTIONS + ",-fused_ce",
        TCMALLOC,
    ),
    ("default + bf16 + ResNet stage checkpointing + tcmalloc (= our lean configuration)", LEAN_OPTIONS, TCMALLOC),
    ("default + bf16 + ResNet stage checkpointing + mmap-backed glibc malloc", LEAN_OPTIONS, MMAP_MALLOC_ENV),
]


def resolve_env(env) -> dict:
    """An environment of TRAIN_CONFIGS/ABLATION: the TCMALLOC placeholder becomes ``LD_PRELOAD`` of tcmalloc
    ({} when it is not available: glibc as is)."""
    if env == TCMALLOC:
        lib = find_tcmalloc()
        return {"LD_PRELOAD": lib} if lib else {}
    return dict(env or {})


def env_label(env: dict) -> str:
    if "LD_PRELOAD" in env and "tcmalloc" in env["LD_PRELOAD"]:
        return "tcmalloc"
    return "glibc malloc " + " ".join(f"{k}={v}" for k, v in env.items()) if env else "glibc malloc"


# ====================================================================== child
def child_train(spec: dict) -> dict:
    """One training loop in this (fresh) process; returns timings and peak memory."""
    from train_step import TrainStep, options_from_string

    setup_threads(THREADS)
    batch = make_batch(seed=0)
    rss_start = current_rss_mb()
    impl, size = spec["impl"], spec["size"]
    model = build_ours(size, train=True) if impl == "ours" else build_peer(size, train=True)
    opts = options_from_string(spec.get("options", "default"))
    step = TrainStep(impl, model, batch, opts)
    rss_built = current_rss_mb()
    label = f"{impl}/{size}" + (f" [{opts.describe()}]" if impl == "ours" else "")
    timing = timed(
        step,
        warmup=spec["warmup"],
        repeats=spec["steps"],
        max_attempts=spec["max_attempts"],
        budget_s=spec.get("budget_s"),
        quiet_wait_s=spec.get("quiet_wait_s", 20.0),
        label=label,
        log=log,
    )
    with open("/proc/self/status") as f:
        hwm = next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM")), float("nan"))
    return dict(
        impl=impl,
        size=size,
        options=opts.describe() if impl == "ours" else "port default (foreach AdamW)",
        samples_per_s=BATCH / timing.value,
        step_s=timing.value,
        timing=timing.summary(),
        peak_rss_mb=peak_rss_mb(),
        vm_hwm_mb=hwm,
        rss_after_import_mb=rss_start,
        rss_after_build_mb=rss_built,
        loss=step.last_loss,
        target_tokens=batch.num_target_tokens,
    )


def run_child(spec: dict) -> dict:
    """Run :func:`child_train` in a fresh interpreter (its own heap), streaming its progress."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-train", json.dumps(spec)]
    env = {**os.environ, **spec.get("env", {})}  # e.g. glibc malloc settings, read at process start
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
    result = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
        elif line.strip():
            print("    " + line.rstrip(), flush=True)
    proc.wait()
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"training child failed ({proc.returncode}): {spec}")
    return result


# ====================================================================== parent
def machine_info() -> dict:
    cpu = cpu_model()
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    import timm

    try:
        import modelscope

        ms_version = modelscope.__version__
    except Exception:  # pragma: no cover
        ms_version = "not installed"
    return dict(
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        cpu=cpu,
        cores=os.cpu_count(),
        threads=THREADS,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        avx512_bf16="avx512_bf16" in flags,
        amx="amx_bf16" in flags,
        python=platform.python_version(),
        torch=torch.__version__,
        timm=timm.__version__,
        modelscope=ms_version,
        platform=platform.platform(),
        loadavg_start=os.getloadavg(),
    )


def bench_training(sizes, args) -> dict:
    """Keys: (impl, size) for the fp32 default step, (impl, "size/label") for the other TRAIN_CONFIGS."""
    out = {}
    for size in sizes:
        runs = [("peer", size, "default", {})] + [
            ("ours", f"{size}/{label}" if label else size, options, env) for label, options, env in TRAIN_CONFIGS
        ]
        for impl, key, options, env in runs:
            env = resolve_env(env)
            log(f"training {impl} / {key} (child process{', env ' + str(env) if env else ''})")
            spec = dict(
                impl=impl,
                size=size,
                options=options,
                env=env,
                warmup=args.warmup,
                steps=args.steps,
                max_attempts=2 * args.steps + 2,
                budget_s=args.train_budget,
                quiet_wait_s=args.quiet_wait,
            )
            r = run_child(spec)
            r["env"] = env
            log(
                f"  → {r['samples_per_s']:.2f} samples/s ({r['step_s']:.3f} s/step), peak RSS {r['peak_rss_mb']:.0f} MB"
            )
            out[(impl, key)] = r
    return out


def bench_ablation(args, reuse: dict | None) -> list:
    rows = []
    for label, options, *rest in ABLATION:
        env = resolve_env(rest[0] if rest else {})
        if options == "default" and not env and reuse is not None:
            r = reuse
        else:
            log(f"ablation (tiny): {label}")
            spec = dict(
                impl="ours",
                size="tiny",
                options=options,
                env=env,
                warmup=args.warmup,
                steps=args.ablation_steps,
                max_attempts=2 * args.ablation_steps + 2,
                budget_s=args.train_budget,
                quiet_wait_s=args.quiet_wait,
            )
            r = run_child(spec)
            log(f"  → {r['step_s']:.3f} s/step, peak RSS {r['peak_rss_mb']:.0f} MB")
        rows.append(
            dict(
                label=label,
                options=options,
                env=env,
                step_s=r["step_s"],
                samples_per_s=r["samples_per_s"],
                peak_rss_mb=r["peak_rss_mb"],
                contended=r["timing"]["contended"],
                loss=r["loss"],
            )
        )
    return rows


@torch.no_grad()
def bench_inference(sizes, args) -> dict:
    from modelscope_ref import ms_generate, ms_sequence_generator

    import ofa_lightning.tasks  # noqa: F401  (the tasks register their decoding presets)
    from ofa_lightning.generation import GenerationConfig, generate

    out = {}
    batch = make_batch(seed=0)
    gen_batch = {"input_ids": batch.input_ids, "patch_images": batch.patch_images, "patch_masks": batch.patch_masks}
    for size in sizes:
        log(f"inference models / {size}: port with random init, ours converted from its weights")
        peer = build_peer(size, train=False)
        ours = ours_from_peer(peer)  # our defaults: channels-last trunk, BatchNorm folded in eval + no-grad

        def variant(
            channels_last: bool = True, fold: bool = True, fuse: bool = True, prepack: bool = True, inplace: bool = True
        ):
            """Ours from the same weights with some of its inference defaults turned off (all on = ``ours``)."""
            from ofa_lightning.speed import SpeedConfig, apply_speed

            speed = SpeedConfig(
                channels_last=channels_last,
                fold_batchnorm=fold,
                fused_convolutions=fuse,  # oneDNN conv+ReLU / conv+add+ReLU in the folded trunk
                inplace_residual=inplace,  # conv+add+ReLU into the shortcut's memory
                prepacked_linears=prepack,  # oneDNN linears with prepacked weights (ofa_lightning/speed/linear.py)
            )
            return apply_speed(ours_from_peer(peer), speed).eval()

        def encode_with(m):
            return lambda: m.encode(batch.input_ids, batch.patch_images, batch.patch_masks)

        def enc_peer():
            return peer.encoder(
                input_ids=batch.input_ids, patch_images=batch.patch_images, patch_masks=batch.patch_masks
            )

        # label -> (result key, what the variant turns off). The report's "what each bought" chain runs from the
        # NCHW variant up to ours, each step turning one more default on (the steps before "linears not
        # prepacked" also run F.linear, and only the fused trunk has an in-place kernel to turn off).
        ablations = {
            "ours (channels-last, BN not folded)": ("encoder_ours_nofold", dict(fold=False, prepack=False)),
            "ours (NCHW, BN not folded)": ("encoder_ours_nchw", dict(channels_last=False, fold=False, prepack=False)),
            "ours (BN folded, not fused)": ("encoder_ours_nofuse", dict(fuse=False, prepack=False)),
            "ours (linears not prepacked)": ("encoder_ours_nopack", dict(prepack=False, inplace=False)),
            "ours (residual add not in place)": ("encoder_ours_noinplace", dict(inplace=False)),
        }
        enc_ours = encode_with(ours)
        fns = {label: encode_with(variant(**off)) for label, (_, off) in ablations.items()}

        ref = enc_peer().last_hidden_state
        diff = float((enc_ours().hidden - ref).abs().max())
        diff_nchw = float((fns["ours (NCHW, BN not folded)"]().hidden - ref).abs().max())
        log(f"  encoder outputs agree: max |Δ| = {diff:.2e} (NCHW, unfolded: {diff_nchw:.2e})")
        res = dict(encoder_max_abs_diff=diff, encoder_nchw_max_abs_diff=diff_nchw)
        # context only (not the port as shipped): the port with the same channels-last trunk
        peer_cl = build_peer(size, train=False)
        peer_cl.load_state_dict(peer.state_dict())
        peer_cl.encoder.embed_images.to(memory_format=torch.channels_last)
        images_cl = batch.patch_images.contiguous(memory_format=torch.channels_last)

        def enc_peer_cl():
            return peer_cl.encoder(input_ids=batch.input_ids, patch_images=images_cl, patch_masks=batch.patch_masks)

        labels = list(ablations)  # timed in alternation, in this order (as before the table)
        order = {
            "ours": enc_ours,
            "port": enc_peer,
            labels[0]: fns[labels[0]],
            labels[1]: fns[labels[1]],
            "port (channels-last)": enc_peer_cl,
            **{lab: fns[lab] for lab in labels[2:]},
        }
        enc = timed_interleaved(
            order,
            warmup=args.enc_warmup,
            repeats=args.enc_repeats,
            quiet_wait_s=args.quiet_wait,
            label=f"encoder/{size} ",
            log=log,
        )
        res["encoder_ours"] = enc["ours"].summary()
        res["encoder_peer"] = enc["port"].summary()
        res["encoder_peer_cl"] = enc["port (channels-last)"].summary()
        for label, (key, _) in ablations.items():
            res[key] = enc[label].summary()
        peer_cl = fns = None  # release before the beam timings

        cfg = GenerationConfig.preset(
            "caption", beam_size=5, max_len_a=0.0, max_len_b=20, min_len=20, no_repeat_ngram_size=3
        )
        gen = ms_sequence_generator(beam_size=5, max_len_a=0, max_len_b=20, min_len=20, no_repeat_ngram_size=3)
        hyps = {}

        def beam_ours():
            hyps["ours"] = generate(ours, gen_batch, cfg)

        def beam_peer():
            hyps["peer"] = ms_generate(gen, peer, batch.input_ids, batch.patch_images, batch.patch_masks)

        # warm-up: ours once; the port on a 1-token generation (same encoder and decoder kernels)
        beam_ours()
        short = ms_sequence_generator(beam_size=5, max_len_a=0, max_len_b=1, min_len=1, no_repeat_ngram_size=3)
        ms_generate(short, peer, batch.input_ids, batch.patch_images, batch.patch_masks)
        peer_reps = args.beam_peer_repeats if size == "tiny" else max(1, args.beam_peer_repeats - 1)
        beam = timed_interleaved(
            {"ours": beam_ours, "port": beam_peer},
            warmup=0,
            repeats={"ours": args.beam_repeats, "port": peer_reps},
            max_rounds=args.beam_repeats + 1,
            quiet_wait_s=args.quiet_wait,
            label=f"beam5/{size} ",
            log=log,
        )
        res["beam_ours"], res["beam_peer"] = beam["ours"].summary(), beam["port"].summary()
        lens = sorted({int(h[0].tokens.numel()) for h in hyps["ours"]})
        same = all(
            torch.equal(hyps["ours"][i][0].tokens, hyps["peer"][i][0]["tokens"]) for i in range(len(hyps["ours"]))
        )
        res["beam_same_best_tokens"] = same
        res["beam_generated_lengths"] = lens
        log(f"  beam: best hypotheses identical to the port's: {same}; lengths (incl. EOS) {lens}")
        if "vqa" not in args.skip_set:
            from vqa import bench_vqa

            res["vqa"] = bench_vqa(peer, ours, batch, args, size, log)
        out[size] = res
        peer = ours = None  # release before the next size
    return out


def ratio_entry(name: str, size: str, ours: float, peer: float, extra: dict | None = None) -> dict:
    if name == "train_samples_per_s":
        ratio, better = ours / peer, "higher"
    elif name == "train_peak_rss_mb":
        ratio, better = ours / peer, "lower"
    else:  # times
        ratio, better = peer / ours, "higher"
    target = TARGETS[name]
    if target is None:
        met = None
    else:
        met = ratio <= target if name == "train_peak_rss_mb" else ratio >= target
    entry = dict(
        name=name,
        config=size,
        ours=round(ours, 4),
        peer=round(peer, 4),
        ratio=round(ratio, 3),
        unit=UNITS[name],
        better=better,
        ratio_definition="ours/peer" if name in ("train_samples_per_s", "train_peak_rss_mb") else "peer/ours",
        target=("none" if target is None else f"<= {target}" if name == "train_peak_rss_mb" else f">= {target}"),
        target_met=None if met is None else bool(met),
    )
    entry.update(extra or {})
    return entry


# ====================================================================== report
def _fmt(x: float, unit: str) -> str:
    if unit == "MB":
        return f"{x:,.0f}"
    if unit == "samples/s":
        return f"{x:.2f}"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def write_report(path: Path, info: dict, results: list, details: dict, args) -> None:
    L = []
    L.append("# OFA-Lightning vs the ModelScope OFA port — CPU benchmark")
    L.append("")
    L.append(
        f"Generated by `make bench` (`benchmarks/suites/run.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`)"
        f"{' — **quick smoke run, few steps**' if args.quick else ''}."
    )
    L.append("")
    L.append(f"* **Date:** {info['date']}")
    L.append(
        f"* **Machine:** {info['cpu']}, {info['cores']} cores, `torch.set_num_threads({info['threads']})`, "
        f"CPU capability `{info['cpu_capability']}`, AVX512-BF16: {'yes' if info['avx512_bf16'] else 'no'}, "
        f"AMX: {'yes' if info['amx'] else 'no'}"
    )
    L.append(
        f"* **Versions:** Python {info['python']}, torch {info['torch']}, timm {info['timm']}, "
        f"modelscope {info['modelscope']}"
    )
    L.append(
        f"* **Workload:** batch {BATCH}, {IMAGE_PX} px images, {SRC_LEN} source + {TGT_LEN} target tokens "
        f"(rows padded to 20, lengths 10-20: {details['batch']['target_tokens']} real target tokens of "
        f"{BATCH * TGT_LEN}), fp32, random init, dropout 0.1 in training; "
        f"total run time {details['runtime_s'] / 60:.1f} min; load average at start "
        f"{', '.join(f'{x:.1f}' for x in info['loadavg_start'])}."
    )
    L.append("")
    L.append("## Results")
    L.append("")
    L.append("| metric | size | ours | ModelScope port | ratio | target | met |")
    L.append("|---|---|---:|---:|---:|---|:---:|")
    names = {
        "train_samples_per_s": "training throughput (samples/s, ↑)",
        "train_peak_rss_mb": "training peak RSS (MB, ↓)",
        "encoder_s": "encoder latency (s/batch, ↓)",
        "beam5_s": "beam-5 × 20 tokens (s/batch, ↓)",
        "vqa_trie_beam_s": "VQA trie-constrained beam 5 (s/batch, ↓)",
        "vqa_allcand_s": "VQA all-candidate scoring, 3,129 answers (s/sample, ↓)",
    }
    for r in results:
        flag = " ⚠" if r.get("contended") else ""
        met = "–" if r["target_met"] is None else ("yes" if r["target_met"] else "no")
        cfg = r["config"] + (" (bf16)" if r.get("precision") == "bf16 autocast" else "")
        target = "–" if r["target"] == "none" else f"{r['target']}×"
        L.append(
            f"| {names[r['name']]} | {cfg} | {_fmt(r['ours'], r['unit'])}{flag} | "
            f"{_fmt(r['peer'], r['unit'])} | {r['ratio']:.2f}× | {target} | "
            f"{met}{' (disturbed)' if r.get('contended') else ''} |"
        )
    L.append("")
    L.append(
        "Ratios: throughput ours/port, times port/ours (so > 1 is better for both), memory ours/port "
        "(< 1 is better). The training target is ≥ 2.0× samples/s *at* ≤ 0.6× peak RSS."
    )
    L.append("⚠ = fewer than two undisturbed measurements; the value includes calls slowed by other processes.")
    L.append("")
    train = details.get("training", {})
    lean_env = next((r.get("env") for k, r in train.items() if k.endswith("/bf16+ckpt")), None)
    allocator = env_label(lean_env) if lean_env is not None else "–"
    L.append(
        f"Training configurations: `tiny`/`medium` = our fp32 default step; `…/bf16` = CPU bf16 autocast "
        f"(`precision=bf16-mixed`; this CPU has AVX512-BF16); `…/bf16+ckpt` = our memory-lean configuration: bf16 "
        f"autocast + `model.speed.checkpoint_resnet=stages` (only the inputs of the stem, stage 1, stage 2 and stage 3 are "
        f"kept; the trunk's forward is recomputed in backward); `…/bf16+ckpt+layers` = leaner still: the same + "
        f"`model.speed.activation_checkpointing=true` (encoder/decoder layers recomputed too) + "
        f"`model.speed.checkpoint_resnet_segments=[1,2,3]` (finer trunk segments, which pay once the layers no longer "
        f"set the peak). The bf16 rows ran with **{allocator}** as the "
        f"allocator (`LD_PRELOAD`; `benchmarks/harness/get_tcmalloc.sh` finds or fetches Debian's libtcmalloc-minimal4; "
        f"without it they run on glibc). The port always runs its own fp32 step on glibc. The bf16 rows change "
        f"numerics (bf16 matmuls/convolutions, fp32 weights and optimiser), so they are reported beside, not "
        f"instead of, the fp32 rows."
    )
    L.append("")
    both = []
    for size in args.sizes:
        for label, *_ in TRAIN_CONFIGS:
            key = f"{size}/{label}" if label else size
            o, pr = train.get(f"ours/{key}"), train.get(f"peer/{size}")
            if o and pr:
                sps, rss = o["samples_per_s"] / pr["samples_per_s"], o["peak_rss_mb"] / pr["peak_rss_mb"]
                ok = sps >= TARGETS["train_samples_per_s"] and rss <= TARGETS["train_peak_rss_mb"]
                both.append(f"{key} {sps:.2f}× at {rss:.2f}× ({'met' if ok else 'not met'})")
    if both:
        L.append(
            "Training target, both halves in one configuration (≥ 2.0× samples/s at ≤ 0.6× peak RSS): "
            + "; ".join(both)
            + "."
        )
        L.append("")
    L.append("### How it was measured")
    L.append("")
    L.append(
        f"* **Training:** each (implementation, size) runs in its own fresh child process (`--child-train`): "
        f"{args.warmup} warm-up step(s), then timed steps until {args.steps} undisturbed ones; samples/s = "
        f"{BATCH} / median step time. Peak RSS = `ru_maxrss` of that child at the end (children are started "
        f"before the parent builds any model, so the parent's memory does not leak into it; `VmHWM` agrees). "
        f"Loss = cross-entropy over the non-pad target tokens. Port: `model(input_ids, patch_images, "
        f"patch_masks, decoder_input_ids).logits` → CE(ignore pad), `torch.optim.AdamW` (default foreach). "
        f"Ours: `benchmarks/harness/train_step.py` default options ({details.get('ours_train_options', '')})."
    )
    L.append(
        "* **Encoder:** eval, `no_grad`, same weights in both (ours converted from the port's random init); "
        "ours with its defaults (channels-last ResNet, BatchNorm folded into the convolutions in eval + "
        "no-grad, oneDNN fused conv+ReLU and conv+add+ReLU kernels, the latter writing into the shortcut's "
        "memory, oneDNN linears with prepacked weights); the eight variants are timed in alternation (ours, "
        "port, ours unfolded, ours NCHW unfolded, port channels-last, ours folded but not fused, ours with plain "
        "linears, ours with the residual add out of place, ...) so drifts hit all alike. The variants before the "
        "prepacked-linears step run the linears through `F.linear`; all but the last write each residual add "
        "into a fresh output. What each bought: "
        + "; ".join(
            f"{s}: ours NCHW unfolded {v['encoder_ours_nchw']['value']:.3f} s → channels-last "
            f"{v['encoder_ours_nofold']['value']:.3f} s → + BN folding "
            + (f"{v['encoder_ours_nofuse']['value']:.3f} s → + fused kernels " if "encoder_ours_nofuse" in v else "")
            + (
                f"{v['encoder_ours_nopack']['value']:.3f} s → + prepacked linears "
                if "encoder_ours_nopack" in v
                else ""
            )
            + (
                f"{v['encoder_ours_noinplace']['value']:.3f} s → + residual add in place "
                if "encoder_ours_noinplace" in v
                else ""
            )
            + f"{v['encoder_ours']['value']:.3f} s; "
            f"port with the same channels-last trunk {v['encoder_peer_cl']['value']:.3f} s"
            for s, v in details.get("inference", {}).items()
        )
        + ". Outputs agree to "
        + ", ".join(f"{s}: {v['encoder_max_abs_diff']:.1e}" for s, v in details.get("inference", {}).items())
        + " max |Δ|."
    )
    L.append(
        "* **Beam search:** beam 5, `min_len = max_len = 20` (21 decoder steps incl. the forced EOS), "
        "no-repeat-3, batch 8, encoder included, ours and port timed in alternation. Ours: `ofa_lightning.generation.generate` (KV cache). "
        "Port: ModelScope `SequenceGenerator` (recomputes the whole prefix each step). Best hypotheses "
        "identical: "
        + ", ".join(
            f"{s}: {'yes' if v['beam_same_best_tokens'] else 'NO'}" for s, v in details.get("inference", {}).items()
        )
        + ". "
        "Of our time per batch, the encoder takes "
        + ", ".join(
            f"{s}: {v['encoder_ours']['value']:.3f} s of {v['beam_ours']['value']:.3f} s"
            for s, v in details.get("inference", {}).items()
        )
        + "."
    )
    vq = {s: v["vqa"] for s, v in details.get("inference", {}).items() if v.get("vqa")}
    if vq:
        any_v = next(iter(vq.values()))
        L.append(
            f"* **VQA** (`benchmarks/suites/vqa.py`): {any_v['num_answers']:,} synthetic answers of 1-3 BPE tokens "
            f"({any_v['answer_vocab']:,} distinct tokens), decoder prompt BOS. *Trie beam*: beam 5, unnormalised "
            f"scores, ≤ 8 tokens, batch 8, encoder included; ours `generate(constraint_trie=Trie)`, port "
            f"`SequenceGenerator(constraint_trie=...)`; best answers identical: "
            + ", ".join(f"{s}: {'yes' if v['trie_beam_same_best'] else 'NO'}" for s, v in vq.items())
            + f". *All-candidate scoring* (OFA's allcand evaluation: every answer teacher-forced, softmax over "
            f"the tokens the trie allows): {any_v['allcand_samples']} sample(s) × all answers, per-sample time "
            f"reported, chunks of {args.allcand_chunk} answers on both sides, encoder included. Ours: "
            f"`score_candidates` (prompt decoded once and its KV cache shared by all chunks, only the trie's "
            f"tokens projected). Port: its decoder over BOS + answer per chunk, full-vocabulary logits, trie "
            f"masks built once outside the timing. Scores agree to "
            + ", ".join(f"{s}: {v['allcand_max_abs_diff']:.1e}" for s, v in vq.items())
            + " max |Δ|; same arg-max: "
            + ", ".join(f"{s}: {'yes' if v['allcand_same_best'] else 'NO'}" for s, v in vq.items())
            + "."
        )
    L.append(
        f"* **Shared machine:** other jobs may run at the same time; each timed call records the CPU share "
        f"other processes used meanwhile and counts as undisturbed below {CLEAN_OTHER_FRAC:.0%}. Before each "
        f"call the harness waits (≤ {args.quiet_wait:.0f} s) for the machine to go quiet. Disturbed calls are "
        f"often 5-10× slower (OpenMP threads spinning on an oversubscribed 2-core machine), so medians use "
        f"undisturbed calls only."
    )
    L.append("")
    if train:
        L.append("Training details (per child):")
        L.append("")
        L.append(
            "| child | options | step (s) | samples/s | timed / undisturbed | RSS after import (MB) | "
            "RSS after build (MB) | peak RSS (MB) |"
        )
        L.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for key, r in train.items():
            t = r["timing"]
            env = f" + {env_label(r['env'])}" if r.get("env") else ""
            L.append(
                f"| {key} | {r['options']}{env} | {r['step_s']:.3f} | {r['samples_per_s']:.2f} | "
                f"{len(t['times'])} / {t['n_clean']} | {r['rss_after_import_mb']:.0f} | "
                f"{r['rss_after_build_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
            )
        L.append("")
    prof = details.get("profile")
    if details.get("profile_error"):
        L.append(f"## Where the time goes\n\nThe step profiler failed in this run: `{details['profile_error']}`.\n")
    if prof:
        from profile_step import format_profile

        L.append("## Where the time goes (one OFA-Tiny training step, ours)")
        L.append("")
        L.append(
            f"Options: {prof['options']}; {prof['rows_projected']} target rows projected. Timers inside real "
            f"steps (module/tensor hooks mark where each block's forward and backward start and end; median "
            f"over {prof['steps_used']} {'DISTURBED (machine busy)' if prof.get('contended') else 'undisturbed'} steps; forward {prof['forward_s']:.3f} s, backward "
            f"{prof['backward_s']:.3f} s). FLOPs (forward + backward) from "
            f"`torch.utils.flop_counter.FlopCounterMode`; 'rest' = whole step − components. The ~{PEAK_GFLOPS:.0f} "
            f"GFLOP/s is the nominal fp32 limit of the 2 cores; a large oneDNN convolution reaches "
            f"{details.get('probe_gflops', {}).get('conv', float('nan')):.0f} GFLOP/s and a 2048³ fp32 matmul "
            f"(MKL) {details.get('probe_gflops', {}).get('matmul', float('nan')):.0f} GFLOP/s here."
        )
        L.append("")
        L.append(format_profile(prof, PEAK_GFLOPS))
        L.append("")
        if prof.get("layer_split"):
            L.append(
                "The ↳ rows split the encoder + decoder layers: each FFN sub-block is timed between its entry "
                "and exit (forward) and between the gradients of its output and input (backward); attention = "
                "layers − FFN, so it also holds the attention sub-blocks' LayerNorms and residual adds."
            )
            L.append("")
    abl = details.get("ablation")
    if abl:
        L.append("## Training-step optimisations (OFA-Tiny, ours, each in a fresh child process)")
        L.append("")
        base = abl[0]
        L.append("| variant | step (s) | samples/s | vs baseline | vs port samples/s | peak RSS (MB) | vs port RSS |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        peer_rss = train.get("peer/tiny", {}).get("peak_rss_mb")
        peer_sps = train.get("peer/tiny", {}).get("samples_per_s")
        for a in abl:
            flag = " ⚠" if a["contended"] else ""
            rel_rss = f"{a['peak_rss_mb'] / peer_rss:.2f}×" if peer_rss else "–"
            rel_sps = f"{a['samples_per_s'] / peer_sps:.2f}×" if peer_sps else "–"
            L.append(
                f"| {a['label']} | {a['step_s']:.3f}{flag} | {a['samples_per_s']:.2f} | "
                f"{base['step_s'] / a['step_s']:.2f}× | {rel_sps} | {a['peak_rss_mb']:,.0f} | {rel_rss} |"
            )
        L.append("")
    # scaling.py, gpu.py, gpu_profile.py, gpu_ceiling.py, by hand
    for extra in (SCALING_MD, GPU_MD, GPU_PROFILE_MD, GPU_CEILING_MD, GPU_NOTES_MD):
        if extra.exists():
            L.append(extra.read_text().rstrip("\n"))
            L.append("")
    if not GPU_MD.exists():
        L.append("## GPU (`benchmarks/suites/gpu.py`)")
        L.append("")
        L.append(
            "No GPU was available for this run, so there are no GPU figures yet. `benchmarks/suites/gpu.py` is ready: "
            "on a single-GPU machine `python benchmarks/suites/gpu.py` measures, in one run of under ten minutes with no "
            "network and no installs, the OFA-Base bf16 480 px training step and caption generation of ours and "
            "of the ModelScope port (targets: MFU ≥ 35 %, training ≥ 3×, generation ≥ 5× the port, each missed "
            "one with what bounds it), memory per sample, the training-step variants, and the largest batch "
            "that fits OFA-Large and OFA-Huge with activation checkpointing and with FSDP, and writes "
            "`benchmarks/results/gpu_results.json` + `benchmarks/results/gpu_results.md` (included here when present). "
            "`--dry-run` runs the same logic on CPU with tiny shapes (tested in `tests/test_gpu_benchmark.py`)."
        )
        L.append("")
    notes = details.get("notes_md")
    if notes:
        L.append(notes)
    path.write_text("\n".join(L) + "\n")


def probe_peak_gflops() -> dict:
    """What a large fp32 convolution and matmul reach on this machine (2 threads)."""
    import torch.nn.functional as F

    def rate(fn, flops, n=3):
        fn()
        best = float("inf")
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return flops / best / 1e9

    with torch.no_grad():
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        x, w = torch.randn(8, 256, 32, 32), torch.randn(256, 256, 3, 3)
        return dict(
            matmul=rate(lambda: a @ b, 2 * 2048**3),
            conv=rate(lambda: F.conv2d(x, w, padding=1), 2 * 8 * 256 * 256 * 9 * 32 * 32),
        )


# ====================================================================== main
NOTES_FILE = RESULTS_DIR / "NOTES.md"
SCALING_MD = RESULTS_DIR / "scaling.md"
GPU_MD = RESULTS_DIR / "gpu_results.md"
GPU_PROFILE_MD = RESULTS_DIR / "gpu_profile.md"  # written by suites/gpu_profile.py
GPU_CEILING_MD = RESULTS_DIR / "gpu_ceiling.md"  # written by suites/gpu_ceiling.py (CPU; reads gpu_profile.json)
GPU_NOTES_MD = RESULTS_DIR / "gpu_notes.md"  # a reading of the GPU runs, when one was written
FOREIGN_SECTION = "\n## Data pipeline"  # a section other tools append to RESULTS.md, kept when this rewrites it; hand-written analysis appended to RESULTS.md when present


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="tiny,medium", help="comma list of OFA sizes (tiny, medium)")
    p.add_argument("--steps", type=int, default=None, help="undisturbed timed training steps per child (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: few steps/repeats, no ablation")
    p.add_argument("--out", default=str(RESULTS_DIR), help="output folder for results.json, details.json, RESULTS.md")
    p.add_argument("--skip", default="", help="comma list of parts to skip: train, ablation, inference, vqa, profile")
    p.add_argument("--child-train", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child_train is not None:
        result = child_train(json.loads(args.child_train))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.skip_set = skip
    q = args.quick
    args.warmup = 1 if q else 3
    args.steps = args.steps or (2 if q else 5)
    args.ablation_steps = 2 if q else 4
    args.train_budget = 60.0 if q else 150.0
    args.enc_warmup, args.enc_repeats = (1, 2) if q else (2, 5)
    args.beam_repeats = 1 if q else 3
    args.beam_peer_repeats = 1 if q else 2
    args.beam_peer_budget = 60.0 if q else 120.0
    args.quiet_wait = 5.0 if q else 20.0
    args.vqa_repeats = 1 if q else 2
    args.allcand_batch = 1 if q else 2  # samples scored against all 3,129 answers (the port takes ~10 s each)
    args.allcand_chunk = 64
    if q:
        skip.add("ablation")

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    setup_threads(THREADS)
    t_start = time.perf_counter()
    info = machine_info()
    log(
        f"machine: {info['cpu']}, {info['cores']} cores, {THREADS} threads; torch {info['torch']}; "
        f"sizes {args.sizes}; {'quick' if q else 'full'} run"
    )
    from train_step import DEFAULT

    batch = make_batch(seed=0)
    details: dict = dict(
        machine=info,
        args={k: v for k, v in vars(args).items() if k != "child_train"},
        batch=dict(target_tokens=batch.num_target_tokens, source_tokens=int(batch.input_ids.ne(1).sum())),
        ours_train_options=DEFAULT.describe(),
    )

    # 1-2. training, each in a child (first, while this process is still small)
    train = {}
    if "train" not in skip:
        train = bench_training(args.sizes, args)
        details["training"] = {f"{i}/{s}": r for (i, s), r in train.items()}
    if "ablation" not in skip and "tiny" in args.sizes:
        details["ablation"] = bench_ablation(args, train.get(("ours", "tiny")))

    # 3-4. encoder and beam search (both models in this process, same weights)
    inference = {}
    if "inference" not in skip:
        inference = bench_inference(args.sizes, args)
        details["inference"] = inference

    # 5. where the time goes
    from contention import wait_for_quiet

    wait_for_quiet(args.quiet_wait)
    details["probe_gflops"] = probe_peak_gflops()
    if "profile" not in skip:
        from profile_step import profile_training_step

        log("profiling one tiny training step (component timers)")
        model = build_ours("tiny", train=True)
        try:  # a broken profiler must not throw away the measurements above: report it, exit 1 at the end
            details["profile"] = profile_training_step(
                model, batch, DEFAULT, repeats=1 if q else 3, quiet_wait_s=args.quiet_wait, log=log
            )
        except Exception as exc:  # noqa: BLE001
            details["profile_error"] = f"{type(exc).__name__}: {exc}"
            log(f"profiling FAILED ({details['profile_error']}); the other results are still written")
        del model

    results = []
    for size in args.sizes:
        for label, _options, _env in TRAIN_CONFIGS:
            key = f"{size}/{label}" if label else size
            if ("ours", key) not in train:
                continue
            o, pr = train[("ours", key)], train[("peer", size)]
            extra = dict(
                options=o["options"],
                env=o.get("env", {}),
                precision="bf16 autocast" if "bf16" in o["options"] else "fp32",
            )
            results.append(
                ratio_entry(
                    "train_samples_per_s",
                    key,
                    o["samples_per_s"],
                    pr["samples_per_s"],
                    dict(contended=o["timing"]["contended"] or pr["timing"]["contended"], **extra),
                )
            )
            results.append(ratio_entry("train_peak_rss_mb", key, o["peak_rss_mb"], pr["peak_rss_mb"], extra))
        if size in inference:
            r = inference[size]
            results.append(
                ratio_entry(
                    "encoder_s",
                    size,
                    r["encoder_ours"]["value"],
                    r["encoder_peer"]["value"],
                    dict(
                        contended=r["encoder_ours"]["contended"] or r["encoder_peer"]["contended"],
                        ours_no_bn_folding=round(r["encoder_ours_nofold"]["value"], 4),
                        ours_nchw_no_folding=round(r["encoder_ours_nchw"]["value"], 4),
                        peer_channels_last=round(r["encoder_peer_cl"]["value"], 4),
                    ),
                )
            )
            results.append(
                ratio_entry(
                    "beam5_s",
                    size,
                    r["beam_ours"]["value"],
                    r["beam_peer"]["value"],
                    dict(
                        contended=r["beam_ours"]["contended"] or r["beam_peer"]["contended"],
                        ours_encoder_s=round(r["encoder_ours"]["value"], 4),
                    ),
                )
            )
            v = r.get("vqa")
            if v:
                results.append(
                    ratio_entry(
                        "vqa_trie_beam_s",
                        size,
                        v["trie_beam_ours"]["value"],
                        v["trie_beam_peer"]["value"],
                        dict(
                            contended=v["trie_beam_ours"]["contended"] or v["trie_beam_peer"]["contended"],
                            same_best=v["trie_beam_same_best"],
                        ),
                    )
                )
                results.append(
                    ratio_entry(
                        "vqa_allcand_s",
                        size,
                        v["allcand_ours"]["value"] / v["allcand_samples"],
                        v["allcand_peer"]["value"] / v["allcand_samples"],
                        dict(
                            contended=v["allcand_ours"]["contended"] or v["allcand_peer"]["contended"],
                            answers=v["num_answers"],
                            max_abs_diff=v["allcand_max_abs_diff"],
                            same_best=v["allcand_same_best"],
                        ),
                    )
                )
    details["runtime_s"] = time.perf_counter() - t_start
    info["loadavg_end"] = os.getloadavg()
    if NOTES_FILE.exists():
        details["notes_md"] = NOTES_FILE.read_text()

    # Other benchmarks (e.g. benchmarks/harness/report.py for the data pipeline) add their own entries to
    # results.json and their own "## ..." section at the end of RESULTS.md: keep those.
    results_path, report_path = out_dir / "results.json", out_dir / "RESULTS.md"
    foreign = []
    if results_path.exists():
        try:
            foreign = [r for r in json.loads(results_path.read_text()) if r.get("name") not in TARGETS]
        except (ValueError, AttributeError):
            foreign = []
    foreign_md = ""
    if report_path.exists():
        old = report_path.read_text()
        if FOREIGN_SECTION in old:
            foreign_md = FOREIGN_SECTION + old.split(FOREIGN_SECTION, 1)[1]
    results_path.write_text(json.dumps(results + foreign, indent=2) + "\n")
    (out_dir / "details.json").write_text(json.dumps(details, indent=2, default=str) + "\n")
    write_report(report_path, info, results, details, args)
    if foreign_md:
        report_path.write_text(report_path.read_text().rstrip("\n") + "\n" + foreign_md)
    log(f"done in {details['runtime_s'] / 60:.1f} min → {out_dir / 'results.json'}, {out_dir / 'RESULTS.md'}")
    for r in results:
        log(
            f"  {r['name']:22s} {r['config']:7s} ours {r['ours']:10.3f}  port {r['peer']:10.3f}  "
            f"ratio {r['ratio']:.2f} (target {r['target']}: {'–' if r['target_met'] is None else 'met' if r['target_met'] else 'not met'})"
        )
    return 1 if details.get("profile_error") else 0


if __name__ == "__main__":
    sys.exit(main())
