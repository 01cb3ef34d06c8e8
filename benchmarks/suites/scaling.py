"""How the cost of an OFA training step grows: time and memory vs image size, batch size and sequence length.

``make bench`` runs it. OFA-Tiny, fp32, our default training step (``train_step.py``), 2 threads.
Each configuration runs in its own fresh child process (1 warm-up step + ``--steps`` timed
steps) so its peak RSS is its own. Three sweeps:

* image size 256 / 384 / 480 px (batch 4, 20 + 20 tokens), each **with and without activation
  checkpointing** (``model.speed.checkpoint_resnet`` + ``model.speed.activation_checkpointing``);
* batch size 1 / 2 / 4 / 8 (256 px);
* target = source sequence length 20 / 64 / 128 tokens (256 px, batch 4).

Memory: ``activation MB/sample`` = (peak RSS during the timed steps − RSS after a finished step
with gradients freed and ``malloc_trim``) / batch: the activations (and transient gradients, a
fixed cost) of one step, per sample. The children run with glibc's ``MALLOC_MMAP_THRESHOLD_=65536``
so that freed activations leave the heap and RSS follows live memory.

Writes ``scaling.json`` and ``scaling.md`` (``--out``, default ``benchmarks/results/``); ``run.py``
includes the markdown in ``RESULTS.md``. About 3-5 minutes on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _p in (HERE.parent / "harness", HERE):  # the shared harness, then this suite's modules
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "1048576"}


def child(spec: dict) -> dict:
    from common import THREADS, build_ours, current_rss_mb, make_batch, peak_rss_mb, setup_threads
    from train_step import TrainStep, options_from_string

    setup_threads(THREADS)
    batch = make_batch(seed=0, batch=spec["batch"], px=spec["px"], src_len=spec["seq"], tgt_len=spec["seq"])
    model = build_ours(spec.get("size", "tiny"), train=True, max_source_positions=max(1024, spec["seq"]))
    step = TrainStep("ours", model, batch, options_from_string(spec["options"]))
    step()  # warm-up (allocates the optimiser state)
    step.optimizer.zero_grad(set_to_none=True)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # pragma: no cover - not glibc
        pass
    base = current_rss_mb()
    peak_before = peak_rss_mb()
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    peak = peak_rss_mb()
    return dict(
        spec,
        step_s=times[len(times) // 2],
        samples_per_s=spec["batch"] / times[len(times) // 2],
        peak_rss_mb=peak,
        base_rss_mb=base,
        peak_before_timed_mb=peak_before,
        act_mb_per_sample=max(0.0, peak - base) / spec["batch"],
        loadavg=os.getloadavg()[0],
    )


def run_child(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV})
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"scaling child failed: {spec}\n{out.stderr[-2000:]}")
    return json.loads(line[len("RESULT ") :])


def plan(quick: bool) -> list[dict]:
    steps = 1 if quick else 2
    ckpt = "default,resnet_stage_checkpoint,layer_checkpoint"
    specs = []
    for px in (256, 384) if quick else (256, 384, 480):
        for options in ("default", ckpt):
            specs.append(dict(sweep="image", px=px, batch=4, seq=20, options=options, steps=steps))
    for bs in (1, 2) if quick else (1, 2, 4, 8):
        specs.append(dict(sweep="batch", px=256, batch=bs, seq=20, options="default", steps=steps))
    for seq in (20, 64) if quick else (20, 64, 128):
        specs.append(dict(sweep="sequence", px=256, batch=4, seq=seq, options="default", steps=steps))
    return specs


def markdown(rows: list[dict], info: dict) -> str:
    L = ["## Scaling (OFA-Tiny training step, ours, fp32; `benchmarks/suites/scaling.py`)", ""]
    L.append(
        f"{info['date']}; each row a fresh child process, median of {rows[0]['steps']} step(s) after a warm-up; "
        f"load average during the sweep {info['load_min']:.1f}-{info['load_max']:.1f} (2 cores: anything "
        f"above ~0.5 from others slows the steps, so compare rows with care). Activation MB/sample = (peak RSS "
        f"of the step − RSS between steps) / batch. Checkpointing = `model.speed.checkpoint_resnet=stages` + "
        f"`model.speed.activation_checkpointing=true`."
    )
    L.append("")
    L.append("**Image size** (batch 4, 20 + 20 tokens):")
    L.append("")
    L.append("| px | patches | checkpointing | step (s) | samples/s | peak RSS (MB) | activation MB/sample |")
    L.append("|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        if r["sweep"] == "image":
            L.append(
                f"| {r['px']} | {(r['px'] // 16) ** 2} | {'yes' if 'checkpoint' in r['options'] else 'no'} | "
                f"{r['step_s']:.2f} | {r['samples_per_s']:.2f} | {r['peak_rss_mb']:,.0f} | "
                f"{r['act_mb_per_sample']:.0f} |"
            )
    L.append("")
    L.append(
        "**Batch size** (256 px, 20 + 20 tokens) and **sequence length** (256 px, batch 4, source = target length):"
    )
    L.append("")
    L.append("| sweep | batch | tokens | step (s) | samples/s | peak RSS (MB) | activation MB/sample |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["sweep"] in ("batch", "sequence"):
            L.append(
                f"| {r['sweep']} | {r['batch']} | {r['seq']} + {r['seq']} | {r['step_s']:.2f} | "
                f"{r['samples_per_s']:.2f} | {r['peak_rss_mb']:,.0f} | {r['act_mb_per_sample']:.0f} |"
            )
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE.parents[0].parent / "results"))
    p.add_argument("--quick", action="store_true", help="fewer points, one timed step each")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    t0 = time.perf_counter()
    rows, loads = [], []
    for spec in plan(args.quick):
        r = run_child(spec)
        loads.append(r["loadavg"])
        print(
            f"[scaling] {spec['sweep']:8s} {spec['px']} px batch {spec['batch']} seq {spec['seq']} "
            f"{spec['options']}: {r['step_s']:.2f} s/step, peak {r['peak_rss_mb']:.0f} MB, "
            f"{r['act_mb_per_sample']:.0f} MB/sample",
            flush=True,
        )
        rows.append(r)
    info = dict(
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        runtime_s=time.perf_counter() - t0,
        load_min=min(loads),
        load_max=max(loads),
        env=ENV,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(dict(info=info, rows=rows), indent=2) + "\n")
    (out / "scaling.md").write_text(markdown(rows, info))
    print(f"[scaling] done in {info['runtime_s'] / 60:.1f} min → {out / 'scaling.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
