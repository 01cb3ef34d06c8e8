"""The three targets of the GPU run and, for each one missed, what bounds it: from this run's kernel profiles and
the lower bound on the step that ``gpu_ceiling.py`` puts together from FLOP/byte counts.

* MFU of the default step ≥ 35 % (FLOPs from ``torch.utils.flop_counter`` on the same step, the device's dense bf16
  peak);
* training ≥ 3× the port's samples/s (same batch, inputs and GPU);
* beam-5 caption generation ≥ 5× the port's images/s.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from gpu_parts import sync

HERE = Path(__file__).resolve().parent
TARGETS = {"mfu": 0.35, "train_speedup_vs_port": 3.0, "generate_speedup_vs_port": 5.0}


def profile_calls(fn, device, calls: int) -> dict:
    """``torch.profiler`` over ``calls`` calls of ``fn`` (after one untimed call): kernel time per call by category
    (``gpu_profile.kernel_breakdown``), the wall time per call, and the share of it the device was busy."""
    import time

    from gpu_profile import kernel_breakdown
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(device)
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        wall = (time.perf_counter() - t0) / calls
    out = kernel_breakdown(prof, calls, "CUDA" if cuda else "CPU")
    out.update(
        wall_ms_per_call=1e3 * wall,
        busy=min(1.0, out["kernel_ms_per_step"] / (1e3 * wall)),
        top_kernels=out["top_kernels"][:8],
    )
    return out


def ceiling_counts(cfg, flops_per_step: float | None, log) -> dict:
    """Per-sample FLOPs by kind and normalisation elements of the default step (``gpu_ceiling.count``). The counts
    in ``gpu_ceiling.json`` are taken when they are for the same size and shapes and their FLOPs agree with this
    run's count within 1 %; otherwise they are counted again (on the CPU, batch 1)."""
    import gpu_ceiling

    saved = HERE.parent / "results" / "gpu_ceiling.json"
    if saved.exists() and flops_per_step:
        old = json.loads(saved.read_text())
        c = old.get("counts", {})
        if (
            (old.get("size"), old.get("px")) == (cfg.base_size, cfg.px)
            and c.get("flops_total")
            and abs(c["flops_total"] * cfg.train_batch / flops_per_step - 1) < 0.01
        ):
            return {**c, "source": "gpu_ceiling.json"}
    log("counting FLOPs by kind and normalisation elements on the CPU (gpu_ceiling.count)")
    threads = torch.get_num_threads()
    try:
        c = gpu_ceiling.count(cfg.base_size, cfg.px, cfg.src, cfg.tgt)
    finally:
        torch.set_num_threads(threads)
    return {**c, "source": "counted in this run"}


def _shares(profile: dict, n: int = 4) -> str:
    return ", ".join(f"{k} {100 * v:.0f} %" for k, v in list(profile["kernel_share"].items())[:n])


def mfu_bound(train: dict, ceiling: dict, profile: dict, peak: float) -> str:
    b = ceiling
    need = train["flops_per_step"] / (TARGETS["mfu"] * peak)
    rows = b["rows"]
    floor70 = rows["at 70 % of peak"]
    prof_row = rows.get("at the profiled rate")
    bn = b["parts_s"]["batchnorm (train mode, 8 bf16 passes)"]
    head = (
        f"MFU {100 * train['mfu']:.1f} % < {100 * TARGETS['mfu']:.0f} %: {100 * TARGETS['mfu']:.0f} % needs the step "
        f"in {1e3 * need:.0f} ms, it takes {1e3 * train['step_s']:.0f} ms ({profile['kernel_ms_per_step']:.0f} "
        f"ms of kernels: {_shares(profile)}). "
    )
    if need < floor70["step_s"]:
        return head + (
            f"Out of reach with OFA's training-mode BatchNorm: even with the convolutions and linears at "
            f"70 % of peak the step cannot go below {1e3 * floor70['step_s']:.0f} ms (MFU ceiling "
            f"{100 * floor70['mfu']:.1f} %; training-mode BatchNorm alone needs ≥ {1e3 * bn:.0f} ms of HBM "
            f"traffic; frozen BatchNorm folded into the convolutions: {100 * floor70['mfu_frozen_bn']:.1f} %)."
        )
    if prof_row and need < prof_row["step_s"]:
        return head + (
            f"Out of reach at the rate this run's convolutions and linears reached "
            f"({prof_row['gemm_rate_tflops']:.0f} TFLOP/s): the floor is {1e3 * prof_row['step_s']:.0f} ms "
            f"(MFU ceiling {100 * prof_row['mfu']:.1f} %); with them at 70 % of peak it would be "
            f"{100 * floor70['mfu']:.1f} %."
        )
    non_gemm = 1 - sum(profile["kernel_share"].get(k, 0) for k in ("matmul", "convolution"))
    return head + (
        f"Within the ceiling ({100 * floor70['mfu']:.1f} % at 70 % of peak): what stands between is the "
        f"{100 * non_gemm:.0f} % of kernel time outside the matrix products ({_shares(profile)})."
    )


def train_ratio_bound(train: dict, port: dict, ceiling_at: dict, profile: dict, port_profile: dict | None) -> str:
    need = port["step_s"] / TARGETS["train_speedup_vs_port"]
    ours = port.get("ours_step_s_same_batch", train["step_s"])
    floor = ceiling_at["rows"]["at 70 % of peak"]["step_s"]
    head = (
        f"training {port['speedup']:.2f}× the port < {TARGETS['train_speedup_vs_port']:.0f}×: at batch "
        f"{port['batch']} the port's step takes {1e3 * port['step_s']:.0f} ms, so 3× needs ours in "
        f"{1e3 * need:.0f} ms; ours takes {1e3 * ours:.0f} ms. "
    )
    theirs = "" if not port_profile else f" The port's kernels: {_shares(port_profile)}."
    if need < floor:
        return head + (
            f"Out of reach: the ceiling's floor for that batch is {1e3 * floor:.0f} ms (convolutions and "
            f"linears at 70 % of peak, training-mode BatchNorm, LayerNorm, attention, AdamW at the HBM "
            f"bandwidth).{theirs}"
        )
    return head + (
        f"Reachable in principle (floor {1e3 * floor:.0f} ms); our kernel time: {_shares(profile)}." + theirs
    )


def generate_ratio_bound(gen: dict, gen_profile: dict | None) -> str:
    o, p = gen["ours"], gen["port"]
    need = p["s_per_batch"] / TARGETS["generate_speedup_vs_port"]
    head = (
        f"generation {gen['speedup']:.2f}× the port < {TARGETS['generate_speedup_vs_port']:.0f}×: the port takes "
        f"{1e3 * p['s_per_batch']:.0f} ms per batch of {gen['batch']}, so 5× needs ours in {1e3 * need:.0f} ms; "
        f"ours takes {1e3 * o['s_per_batch']:.0f} ms. "
    )
    if not gen_profile:
        return head + "No profile of our generation was taken (time budget)."
    busy, kernels = gen_profile["busy"], gen_profile["kernel_ms_per_step"]
    if busy < 0.5:
        return head + (
            f"Host-bound: the device is busy {100 * busy:.0f} % of our call ({kernels:.0f} ms of kernels "
            f"in {gen_profile['wall_ms_per_call']:.0f} ms); the rest is Python and kernel launches "
            f"between the beam steps ({_shares(gen_profile)})."
        )
    return head + (
        f"Kernel-bound: the device is busy {100 * busy:.0f} % of our call; kernels "
        f"{kernels:.0f} ms ({_shares(gen_profile)})."
    )


def part_targets(res: dict, cfg, peak: float | None, log) -> dict:
    """Each target's value, whether it is met, and when not, the line that says what bounds it."""
    import gpu_ceiling

    out: dict = {}
    train, port, gen = res.get("train"), res.get("port_train"), res.get("generate")
    prof, port_prof, gen_prof = res.get("profile"), res.get("port_profile"), res.get("generate_profile")
    ceiling = None
    if train and peak:
        counts = ceiling_counts(cfg, train.get("flops_per_step"), log)
        measured = {"step_s": train["step_s"], "mfu": train["mfu"]}
        profile = None if not prof else {**prof, f"batch{cfg.train_batch}": measured}
        ceiling = gpu_ceiling.bound(counts, profile, cfg.train_batch, peak=peak)
        res["ceiling"] = {
            "counts_source": counts["source"],
            "batch": cfg.train_batch,
            "parts_s": ceiling["parts_s"],
            "rows": ceiling["rows"],
        }
    if train and train.get("mfu") is not None:
        met = train["mfu"] >= TARGETS["mfu"]
        out["mfu"] = {
            "value": train["mfu"],
            "target": TARGETS["mfu"],
            "met": met,
            "bound": None if met or not (ceiling and prof) else mfu_bound(train, ceiling, prof, peak),
        }
    if train and port and "speedup" in port:
        met = port["speedup"] >= TARGETS["train_speedup_vs_port"]
        bound = None
        if not met and ceiling and prof:
            at = ceiling if port["batch"] == cfg.train_batch else gpu_ceiling.bound(counts, None, port["batch"], peak)
            bound = train_ratio_bound(train, port, at, prof, port_prof)
        out["train_speedup_vs_port"] = {
            "value": port["speedup"],
            "target": TARGETS["train_speedup_vs_port"],
            "met": met,
            "bound": bound,
        }
    if gen and "speedup" in gen:
        met = gen["speedup"] >= TARGETS["generate_speedup_vs_port"]
        out["generate_speedup_vs_port"] = {
            "value": gen["speedup"],
            "target": TARGETS["generate_speedup_vs_port"],
            "met": met,
            "bound": None if met else generate_ratio_bound(gen, gen_prof),
        }
    for name, t in out.items():
        log(
            f"target {name}: {t['value']:.3g} vs {t['target']:.3g}: {'met' if t['met'] else 'NOT met'}"
            + (f" — {t['bound']}" if t["bound"] else "")
        )
    return out
