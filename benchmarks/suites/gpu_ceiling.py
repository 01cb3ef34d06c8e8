"""How high can an OFA-Base bf16 training step's MFU go on an H100? A bound from FLOPs, bytes and a measured profile.

Runs on the CPU in under a minute (no GPU needed): builds OFA-Base, runs one 480 px training step at batch 1 and
counts, per sample,

* the FLOPs by kind (``FlopCounterMode``): convolutions, linear layers, attention-like batched products;
* the elements that pass through each BatchNorm and LayerNorm (forward hooks).

It then reads the kernel times of a real H100 step from ``gpu_profile.json`` (``benchmarks/suites/gpu_profile.py``) and
puts together a lower bound on the step time at the profiled batch, from parts that no implementation in PyTorch
can avoid:

* the convolutions and linear layers at the rate their kernels reached in the profile (and, as a second row, at
  70 % of the dense bf16 peak, about the best cuBLAS/cuDNN reach on such shapes);
* training-mode BatchNorm at the HBM bandwidth: 8 passes over its bf16 activations (forward: one read for the
  statistics, one read and one write to normalise; backward: x and dy read for the reductions, then x and dy read
  and dx written). ``--freeze-resnet`` (FrozenBatchNorm2d) folds into the convolutions and would remove it;
* LayerNorm at the HBM bandwidth: 5 bf16 passes (forward read and write; backward x and dy read, dx written);
* attention at 50 % of the peak (a FlashAttention-class kernel);
* fused AdamW at the HBM bandwidth: 7 fp32 tensors of the parameters' size (p, g, m, v read; p, m, v written).

Everything else (residual adds, GELU, dropout, casts) is left out, so the bound is generous: the MFU it gives is a
ceiling, not a forecast. Writes ``gpu_ceiling.json`` and ``gpu_ceiling.md`` into ``--out`` (default
``benchmarks/``); ``run.py`` includes the markdown in ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository (ofa_lightning)
sys.path.insert(0, str(HERE.parent / "harness"))
sys.path.insert(0, str(HERE))

import gpu  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

H100_PEAK_BF16 = 989e12  # dense bf16 FLOP/s, H100 SXM (what gpu.py's MFU divides by)
H100_HBM = 3.35e12  # bytes/s, H100 SXM HBM3
HBM_EFFICIENCY = 0.9  # share of the nominal bandwidth a streaming kernel reaches
KINDS = {
    "convolution": "convolution",
    "convolution_backward": "convolution",
    "mm": "linear",
    "addmm": "linear",
    "bmm": "attention",
    "baddbmm": "attention",
    "_scaled_dot_product": "attention",
    "_flash": "attention",
    "_efficient_attention": "attention",
}


def kind_of(op) -> str:
    name = str(op).split(".")[-1] if "." in str(op) else str(op)
    for key, kind in KINDS.items():
        if name.startswith(key):
            return kind
    return "other"


def count(size: str, px: int, src: int, tgt: int) -> dict:
    """FLOPs by kind and normalisation elements, per sample, of one bf16 training step on the CPU (batch 1)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device("cpu")
    model = gpu.build(size, device).train()
    elements: Counter = Counter()

    def hook(mod, inputs, _out):
        elements[type(mod).__name__] += inputs[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm))]
    batch = gpu.make_batch(1, px, src, tgt, device, vocab=min(50260, model.config.vocab_size))
    counter = FlopCounterMode(display=False)
    with counter:
        gpu.loss_fn(model, batch, device).backward()
    for h in handles:
        h.remove()
    flops: Counter = Counter()
    for op, n in counter.get_flop_counts()["Global"].items():
        flops[kind_of(op)] += n
    params = sum(p.numel() for p in model.parameters())
    return {
        "flops": dict(flops),
        "flops_total": sum(flops.values()),
        "batchnorm_elements": elements["BatchNorm2d"],
        "layernorm_elements": elements["LayerNorm"],
        "parameters": params,
    }


def bound(c: dict, profile: dict | None, batch: int, peak: float = H100_PEAK_BF16) -> dict:
    bw = H100_HBM * HBM_EFFICIENCY
    flops = {k: v * batch for k, v in c["flops"].items()}
    total = c["flops_total"] * batch
    gemm = flops.get("convolution", 0) + flops.get("linear", 0)
    parts = {
        "batchnorm (train mode, 8 bf16 passes)": 8 * 2 * c["batchnorm_elements"] * batch / bw,
        "layernorm (5 bf16 passes)": 5 * 2 * c["layernorm_elements"] * batch / bw,
        "attention at 50 % of peak": flops.get("attention", 0) / (0.5 * peak),
        "fused AdamW (7 fp32 passes)": 7 * 4 * c["parameters"] / bw,
    }
    rows = {}
    gemm_rates = {"at 70 % of peak": 0.7 * peak}
    if profile:
        share, ms = profile["kernel_share"], profile["kernel_ms_per_step"]
        gemm_ms = (share.get("matmul", 0) + share.get("convolution", 0)) * ms
        if gemm_ms > 0:
            gemm_rates = {"at the profiled rate": gemm / (gemm_ms / 1e3), **gemm_rates}
    for label, rate in gemm_rates.items():
        t_gemm = gemm / rate
        t = t_gemm + sum(parts.values())
        t_frozen = t - parts["batchnorm (train mode, 8 bf16 passes)"]
        rows[label] = {
            "gemm_rate_tflops": rate / 1e12,
            "gemm_s": t_gemm,
            "step_s": t,
            "mfu": total / t / peak,
            "mfu_frozen_bn": total / t_frozen / peak,
        }
    need = total / (0.45 * peak)
    return {
        "batch": batch,
        "flops_per_step": total,
        "flops_share": {k: v / total for k, v in flops.items()},
        "parts_s": parts,
        "rows": rows,
        "step_for_45pct_s": need,
        "measured": None if not profile else profile.get(f"batch{batch}"),
    }


def markdown(res: dict) -> str:
    b = res["bound"]
    L = [
        "### How high the GPU MFU can go (`benchmarks/suites/gpu_ceiling.py`)",
        "",
        f"OFA-{res['size'].capitalize()}, {res['px']} px, bf16, batch {b['batch']}: {b['flops_per_step'] / 1e12:.2f} "
        "TFLOP per training step ("
        + ", ".join(f"{k} {100 * v:.0f} %" for k, v in sorted(b["flops_share"].items(), key=lambda kv: -kv[1]))
        + "). "
        f"BatchNorm sees {res['counts']['batchnorm_elements'] / 1e6:.1f} M and LayerNorm "
        f"{res['counts']['layernorm_elements'] / 1e6:.1f} M elements per sample. Lower bound on the step, from the "
        f"parts no PyTorch implementation avoids (HBM at {HBM_EFFICIENCY:.0%} of {H100_HBM / 1e12:.2f} TB/s, dense "
        f"bf16 peak {H100_PEAK_BF16 / 1e12:.0f} TFLOP/s; residual adds, GELU, dropout and casts left out):",
        "",
        "| part | ms per step |",
        "|---|---:|",
    ]
    L += [f"| {k} | {1e3 * v:.1f} |" for k, v in b["parts_s"].items()]
    L += [
        "",
        "| convolutions + linears | their rate (TFLOP/s) | bound on the step (ms) | MFU ceiling | "
        "MFU ceiling, frozen BN folded into the convolutions |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, r in b["rows"].items():
        L.append(
            f"| {label} | {r['gemm_rate_tflops']:.0f} | {1e3 * r['step_s']:.1f} | {100 * r['mfu']:.1f} % | "
            f"{100 * r['mfu_frozen_bn']:.1f} % |"
        )
    m = b.get("measured")
    L += [
        "",
        f"45 % MFU needs the whole step in {1e3 * b['step_for_45pct_s']:.1f} ms."
        + (f" Measured (profile): {1e3 * m['step_s']:.0f} ms, {100 * m['mfu']:.1f} %." if m else ""),
    ]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="base")
    p.add_argument("--px", type=int, default=480)
    p.add_argument("--batch", type=int, default=32, help="the profiled batch (gpu_profile.json)")
    p.add_argument("--profile", default=str(HERE.parent / "results" / "gpu_profile.json"))
    p.add_argument("--out", default=str(HERE.parent / "results"))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    counts = count(args.size, args.px, 20, 20)
    prof_path = Path(args.profile)
    profile = json.loads(prof_path.read_text()) if prof_path.exists() else None
    res = {
        "size": args.size,
        "px": args.px,
        "counts": counts,
        "bound": bound(counts, profile, args.batch),
        "profile": str(prof_path) if profile else None,
        "runtime_s": time.perf_counter() - t0,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_ceiling.json").write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    (out / "gpu_ceiling.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
