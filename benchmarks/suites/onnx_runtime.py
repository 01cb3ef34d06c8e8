"""Captioning latency: the ONNX graphs under onnxruntime against eager PyTorch, same run, same inputs, same threads.

OFA-Tiny (random weights, OFA's vocabulary), ``--image-size`` px images, caption decoding as OFA evaluates it (beam 5,
at most 16 tokens, no-repeat 3-grams, min length 1), batches of 1 and 8. Eager: ``generate`` on the model with the
kit's fast CPU paths (``ofa_lightning.speed``, ``fast`` profile) and on the plain model; ONNX: the same ``generate``
over ``OnnxOFA`` (``ofa-export --format onnx`` graphs). Reported: seconds per caption (median of ``--repeats``
runs, after one warm-up) and the speed-up of ONNX over each eager variant. Both decode the same tokens (checked).

    python benchmarks/suites/onnx_runtime.py --out benchmarks/results/onnx_runtime.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))
from machine import cpu_model  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args(argv)

    import copy

    import torch

    from ofa_lightning.export.onnx_graphs import export_onnx
    from ofa_lightning.export.onnx_runner import OnnxOFA
    from ofa_lightning.generation import GenerationConfig, generate
    from ofa_lightning.model import OFAModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    plain = OFAModel.from_name(args.size, dropout=0.0).eval()
    try:
        from ofa_lightning.speed import apply_speed

        fast = apply_speed(copy.deepcopy(plain), "fast").eval()
    except ImportError:
        fast = plain
    folder = tempfile.mkdtemp(prefix="ofa_onnx_bench_")
    start = time.perf_counter()
    export_onnx(plain, folder, image_size=args.image_size)
    export_s = time.perf_counter() - start
    onnx = OnnxOFA(folder, threads=args.threads)
    config = GenerationConfig(beam_size=5, max_len_b=16, min_len=1, no_repeat_ngram_size=3)
    rows = []
    g = torch.Generator().manual_seed(0)
    for b in args.batches:
        ids = torch.randint(4, 50000, (b, 20), generator=g)
        ids[:, 0], ids[:, -1] = 0, 2
        batch = {
            "input_ids": ids,
            "patch_images": torch.randn(b, 3, args.image_size, args.image_size, generator=g),
            "patch_masks": torch.ones(b, dtype=torch.bool),
        }
        with torch.no_grad():
            t_fast, out_fast = timed(lambda: generate(fast, batch, config), args.repeats)
            t_plain, _ = timed(lambda: generate(plain, batch, config), args.repeats)
            t_onnx, out_onnx = timed(lambda: onnx.generate(batch, config), args.repeats)
        same = [h[0].tokens.tolist() for h in out_fast] == [h[0].tokens.tolist() for h in out_onnx]
        row = {
            "batch": b,
            "eager_fast_s": t_fast / b,
            "eager_plain_s": t_plain / b,
            "onnx_s": t_onnx / b,
            "speedup_vs_fast": t_fast / t_onnx,
            "speedup_vs_plain": t_plain / t_onnx,
            "same_best_tokens": same,
        }
        rows.append(row)
        print(row, flush=True)
    print(f"\nexport: {export_s:.0f} s\n")
    print(
        "| batch | eager, fast paths (s/caption) | eager, plain (s/caption) | ONNX Runtime (s/caption) | "
        "ONNX vs fast | ONNX vs plain | same tokens |\n|---:|---:|---:|---:|---:|---:|---|"
    )
    for r in rows:
        print(
            f"| {r['batch']} | {r['eager_fast_s']:.3f} | {r['eager_plain_s']:.3f} | {r['onnx_s']:.3f} | "
            f"{r['speedup_vs_fast']:.2f}x | {r['speedup_vs_plain']:.2f}x | {r['same_best_tokens']} |"
        )
    if args.out:
        import onnxruntime

        meta = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": cpu_model(),
            "threads": args.threads,
            "size": args.size,
            "image_size": args.image_size,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "export_s": export_s,
        }
        with open(args.out, "w") as f:
            json.dump({"settings": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
