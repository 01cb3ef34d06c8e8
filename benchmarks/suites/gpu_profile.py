"""Where an OFA-Base bf16 training step spends its GPU time (companion to ``gpu.py``; one run, a few minutes).

Prints and writes (``--out``) the step time at batch 32 and 64, a kernel-time breakdown by category from
``torch.profiler`` (convolution, matmul, attention, normalisation, elementwise, optimiser, other) and the step
time with each encoder/decoder layer compiled by ``torch.compile``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository (ofa_lightning)
sys.path.insert(0, str(HERE.parent / "harness"))
sys.path.insert(0, str(HERE))

import gpu  # noqa: E402
import torch  # noqa: E402

CATEGORIES = [  # first match wins (kernel names, lower case)
    ("convolution", ("conv", "cudnn", "implicit_gemm", "wgrad", "dgrad", "fprop", "sm90_xmma")),
    ("attention", ("attention", "fmha", "flash", "softmax")),
    ("matmul", ("gemm", "cutlass", "matmul", "nvjet")),
    ("normalisation", ("norm", "welford")),
    ("optimiser", ("adam", "foreach", "multi_tensor")),
    ("elementwise", ("elementwise", "vectorized", "reduce", "copy", "fill", "gelu", "dropout", "cat", "index")),
]


def categorise(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def kernel_breakdown(prof, steps: int, device_type: str = "CUDA") -> dict:
    """Kernel time per step by category, its total and the largest kernels, from a finished ``torch.profiler``
    run over ``steps`` steps. ``device_type="CPU"``: the CPU operators' self times stand in for kernels."""
    by_cat: dict = defaultdict(float)
    kernels = []
    for e in prof.key_averages():
        if device_type == "CUDA":
            dt = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        else:
            dt = e.self_cpu_time_total
        if dt and e.device_type.name == device_type:
            by_cat[categorise(e.key)] += dt
            kernels.append((dt, e.key[:90], e.count))
    total = sum(by_cat.values())
    return {
        "kernel_share": {k: v / total for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
        "kernel_ms_per_step": total / steps / 1000,
        "top_kernels": [
            (round(dt / steps / 1000, 2), k, c // steps) for dt, k, c in sorted(kernels, reverse=True)[:25]
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(HERE.parent / "results"))
    p.add_argument(
        "--attention-kernel",
        default="sdpa",
        choices=("sdpa", "flex"),
        help="model.speed.attention_kernel of the profiled model (flex: ofa_lightning/speed/flex.py)",
    )
    args = p.parse_args()
    device = torch.device("cuda")
    res: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "attention_kernel": args.attention_kernel,
    }
    model = gpu.build("base", device, attention_kernel=args.attention_kernel)
    peak = gpu.peak_flops(device)
    for batch in (32, 64):
        b = gpu.make_batch(batch, 480, 20, 20, device)
        step = gpu.Step(model, b, device)
        t = gpu.timed(step, device, warmup=2, repeats=5)
        flops = gpu.step_flops(model, b, device)
        res[f"batch{batch}"] = {"step_s": t, "samples_per_s": batch / t, "mfu": flops / t / peak}  # peak: FLOP/s
        print(batch, res[f"batch{batch}"], flush=True)
        del step
    b = gpu.make_batch(32, 480, 20, 20, device)
    step = gpu.Step(model, b, device)
    step()
    gpu.sync(device)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
        gpu.sync(device)
    res.update(kernel_breakdown(prof, 3))
    print(json.dumps(res["kernel_share"], indent=1), res["kernel_ms_per_step"], flush=True)
    for row in res["top_kernels"]:
        print(row, flush=True)
    # compiled transformer layers
    try:
        t0 = time.time()
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            layer.compile()
        t = gpu.timed(step, device, warmup=3, repeats=5)
        res["compiled_layers"] = {"step_s": t, "samples_per_s": 32 / t, "compile_and_warmup_s": time.time() - t0}
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        res["compiled_layers"] = {"error": repr(exc)[:300]}
    print("compiled", res["compiled_layers"], flush=True)
    Path(args.out, "gpu_profile.json").write_text(json.dumps(res, indent=1))
    Path(args.out, "gpu_profile.md").write_text(to_markdown(res))


def to_markdown(res: dict) -> str:
    """The profile as the RESULTS.md section ``run.py`` includes (``gpu_profile.md``)."""
    L = [
        "### Where an OFA-Base training step spends its GPU time (`benchmarks/suites/gpu_profile.py`)",
        "",
        f"{res['device']}; torch {res['torch']}; bf16 autocast, 480 px, 20 + 20 tokens, random init; "
        f"`model.speed.attention_kernel={res.get('attention_kernel', 'sdpa')}`.",
        "",
        "| batch | step (s) | samples/s | MFU |",
        "|---:|---:|---:|---:|",
    ]
    for key in ("batch32", "batch64"):
        r = res[key]
        L.append(f"| {key[5:]} | {r['step_s']:.3f} | {r['samples_per_s']:.1f} | {100 * r['mfu']:.1f} % |")
    comp = res.get("compiled_layers", {})
    if "step_s" in comp:
        L += [
            "",
            f"Each encoder/decoder layer compiled with `torch.compile` (batch 32): {comp['step_s']:.3f} s/step, "
            f"{comp['samples_per_s']:.1f} samples/s ({comp['compile_and_warmup_s']:.0f} s to compile and warm up).",
        ]
    elif comp:
        L += ["", f"`torch.compile` of the layers failed: {comp.get('error')}"]
    L += [
        "",
        f"Kernel time by category (batch 32, {res['kernel_ms_per_step']:.0f} ms of kernels per step):",
        "",
        "| category | share |",
        "|---|---:|",
    ]
    L += [f"| {k} | {100 * v:.1f} % |" for k, v in res["kernel_share"].items()]
    L += ["", "Largest kernels (ms per step, calls per step):", "", "| ms | calls | kernel |", "|---:|---:|---|"]
    L += [f"| {ms} | {calls} | `{name}` |" for ms, name, calls in res["top_kernels"][:12]]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
