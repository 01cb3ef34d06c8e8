"""Soak test: the demo configuration (``experiment=demo``) for N CPU steps with 2 loader workers, resident memory
sampled along the way; no leak = RSS at the last sample within 10 % of RSS at the first.

    .venv/bin/python benchmarks/suites/soak.py                      # 1,000 steps, RSS at steps 200 and 1,000 (the gate)
    .venv/bin/python benchmarks/suites/soak.py --steps 20 --at 5 20 --every 5 --num-images 60 --out /tmp/soak
    .venv/bin/python benchmarks/suites/soak.py --append-results     # also put the paragraph into benchmarks/results/RESULTS.md

Writes ``<out>/soak.json`` (every sample: step, RSS of the training process, RSS of it + its loader workers and
other children, wall time) and ``<out>/soak.md`` (the paragraph for ``benchmarks/results/RESULTS.md``). RSS is read after
``gc.collect()`` at the end of the sampled training step, in the main process (the gate) and summed over its
children (reported). Evaluation runs on the demo's cadence (``trainer.val_check_interval``, 500 steps), so the
step-200 sample comes before the first evaluation and the step-1,000 one after the others: a leak in evaluation
shows up too.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTION = "## Soak (memory over a long CPU run)"


def _rss_mb() -> tuple[float, float]:
    import psutil

    me = psutil.Process()
    own = me.memory_info().rss
    total = own
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return own / 2**20, total / 2**20


def make_sampler(steps_to_sample: set[int], every: int, records: list[dict], start: float):
    import pytorch_lightning as pl

    class RSSSampler(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step in steps_to_sample or (every and step % every == 0):
                gc.collect()
                own, total = _rss_mb()
                records.append(
                    {
                        "step": step,
                        "rss_mb": round(own, 1),
                        "rss_with_children_mb": round(total, 1),
                        "wall_s": round(time.time() - start, 1),
                    }
                )
                print(f"  step {step:>5}: RSS {own:8.1f} MB (with workers {total:8.1f} MB)", flush=True)

    return RSSSampler()


def run(args: argparse.Namespace) -> dict:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    from data_recipes.shapes_pipeline import build_shapes_shards
    from ofa_lightning.training import run as run_module

    root = Path(args.root or tempfile.mkdtemp(prefix="ofa-soak-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    build_shapes_shards(root / "data" / "shapes", num_images=args.num_images, seed=0, image_size=128, overwrite=True)
    first, last = min(args.at), max(args.at)
    overrides = [
        "experiment=demo",
        f"trainer.max_steps={args.steps}",
        f"data.num_workers={args.workers}",
        "test_after_fit=false",
        "run_name=soak",
        *args.overrides,
    ]
    run_dir = root / "runs" / "soak"
    cfg = run_module.compose_config(overrides, run_dir, root)
    records: list[dict] = []
    start = time.time()
    real = run_module.build_callbacks
    run_module.build_callbacks = lambda c, d: [*real(c, d), make_sampler(set(args.at), args.every, records, start)]
    try:
        metrics = run_module.train(cfg)
    finally:
        run_module.build_callbacks = real
    by_step = {r["step"]: r for r in records}
    missing = [s for s in args.at if s not in by_step]
    if missing:
        raise RuntimeError(f"no RSS sample at steps {missing} (did the run reach them?)")
    ratio = by_step[last]["rss_mb"] / by_step[first]["rss_mb"]
    import torch

    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_avg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "config": overrides,
        "steps": args.steps,
        "workers": args.workers,
        "num_images": args.num_images,
        "first_step": first,
        "last_step": last,
        "rss_first_mb": by_step[first]["rss_mb"],
        "rss_last_mb": by_step[last]["rss_mb"],
        "ratio": round(ratio, 4),
        "tolerance": args.tolerance,
        "passed": bool(ratio <= 1 + args.tolerance),
        "rss_with_children_first_mb": by_step[first]["rss_with_children_mb"],
        "rss_with_children_last_mb": by_step[last]["rss_with_children_mb"],
        "max_rss_mb": max(r["rss_mb"] for r in records),
        "samples": records,
        "val_check_interval": int(cfg.trainer.val_check_interval),
        "wall_s": round(time.time() - start, 1),
        "train_loss": metrics.get("train/loss"),
    }
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    paragraph = describe(result)
    (out / "soak.md").write_text(paragraph)
    if args.append_results:
        append_results(paragraph, REPO / "benchmarks" / "results" / "RESULTS.md")
    print(paragraph)
    return result


def describe(r: dict) -> str:
    verdict = "no leak" if r["passed"] else "**possible leak**"
    series = ", ".join(f"{s['step']}: {s['rss_mb']:.0f}" for s in r["samples"])
    return (
        f"{SECTION}\n\n"
        f"`benchmarks/suites/soak.py` ({r['date']}, {r['machine']['cpu_count']} cores, torch "
        f"{r['machine']['torch']}): `experiment=demo` for {r['steps']:,} CPU steps with {r['workers']} loader "
        f"workers (evaluation every {r.get('val_check_interval', '?')} steps, no final test). Resident memory "
        f"of the training process: "
        f"{r['rss_first_mb']:,.0f} MB at step {r['first_step']:,} and {r['rss_last_mb']:,.0f} MB at step "
        f"{r['last_step']:,} ({(r['ratio'] - 1) * 100:+.1f} %, limit +{r['tolerance'] * 100:.0f} %): {verdict}. "
        f"With the loader workers and other children: {r['rss_with_children_first_mb']:,.0f} → "
        f"{r['rss_with_children_last_mb']:,.0f} MB. Highest sample {r['max_rss_mb']:,.0f} MB; wall time "
        f"{r['wall_s'] / 60:.1f} min. RSS (MB) by step: {series}. Raw numbers: `soak.json`.\n"
    )


def append_results(paragraph: str, path: Path) -> None:
    """Puts the paragraph into RESULTS.md, replacing an earlier soak section."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        nxt = rest.find("\n## ")
        text = head + paragraph.rstrip("\n") + ("\n" + rest[nxt:] if nxt >= 0 else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + paragraph
    path.write_text(text, encoding="utf-8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument(
        "--at", type=int, nargs="+", default=[200, 1000], help="steps whose RSS is compared (first vs last)"
    )
    parser.add_argument("--every", type=int, default=100, help="also sample every N steps (0: only --at)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--num-images", type=int, default=1500, help="shapes scenes (the demo's default)")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--root", type=Path, default=None, help="data and run dir (default: a temporary dir)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "soak")
    parser.add_argument("--append-results", action="store_true", help="write the paragraph into RESULTS.md")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args(argv)
    if max(args.at) > args.steps:
        parser.error(f"--at {max(args.at)} is beyond --steps {args.steps}")
    return args


def main(argv: list[str] | None = None) -> int:
    result = run(parse_args(argv))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
