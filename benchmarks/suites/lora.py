"""LoRA against full fine-tuning, same run, same batch: trainable parameters, peak memory and time per training step.

Each (size, mode) runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its own: the model
is built (random weights), LoRA injected (``module.peft=lora`` defaults: rank 8 on attention + FFN, ResNet
BatchNorm frozen) or not, then ``--steps`` AdamW steps of OFA's label-smoothed loss on one synthetic batch
(``--batch`` rows, ``--image-size`` px images, 24 source and 16 target tokens) after two warm-up steps. The median
step time (forward + backward + optimiser) is reported. On a GPU (``--device cuda``) peak memory is
``torch.cuda.max_memory_allocated``.

    python benchmarks/suites/lora.py --sizes tiny base --out benchmarks/results/lora.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))
from machine import cpu_model  # noqa: E402


def one(size: str, mode: str, steps: int, batch: int, image_size: int, threads: int, device: str) -> dict:
    import torch

    from ofa_lightning.model import OFAModel
    from ofa_lightning.training.loss import LossConfig, seq2seq_loss
    from ofa_lightning.training.optim import OptimConfig, apply_freezing, build_optimizer
    from ofa_lightning.training.peft import PEFTConfig, apply_peft

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = OFAModel.from_name(size, dropout=0.0)
    optim_cfg = OptimConfig(lr=1e-4)
    if mode == "lora":
        optim_cfg.freeze_resnet_bn = True
        apply_freezing(model, optim_cfg)
        apply_peft(model, PEFTConfig())
    model.to(device).train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(model, optim_cfg)
    g = torch.Generator().manual_seed(0)
    tgt = torch.randint(4, 50000, (batch, 16), generator=g)
    data = {
        "input_ids": torch.randint(4, 50000, (batch, 24), generator=g),
        "patch_images": torch.randn(batch, 3, image_size, image_size, generator=g),
        "patch_masks": torch.ones(batch, dtype=torch.bool),
        "prev_output_tokens": torch.cat([torch.zeros(batch, 1, dtype=torch.long), tgt[:, :-1]], 1),
        "target": tgt,
    }
    data = {k: v.to(device) for k, v in data.items()}
    loss_cfg = LossConfig(label_smoothing=0.1)
    pad = model.config.pad_token_id
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = seq2seq_loss(model, data, loss_cfg, pad)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "size": size,
        "mode": mode,
        "trainable": trainable,
        "total": total,
        "peak_mib": round(peak, 1),
        "step_s": round(statistics.median(times), 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--one", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        row = one(args.one[0], args.one[1], args.steps, args.batch, args.image_size, args.threads, args.device)
        print(json.dumps(row))
        return 0
    rows = []
    for size in args.sizes:
        for mode in ("full", "lora"):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                size,
                mode,
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--image-size",
                str(args.image_size),
                "--threads",
                str(args.threads),
                "--device",
                args.device,
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print("\n| size | mode | trainable params | peak memory (MiB) | step (s) |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['size']} | {r['mode']} | {r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f} %) | "
            f"{r['peak_mib']:,.0f} | {r['step_s']:.3f} |"
        )
    if args.out:
        meta = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": cpu_model(),
            "threads": args.threads,
            "batch": args.batch,
            "image_size": args.image_size,
            "steps": args.steps,
            "device": args.device,
        }
        with open(args.out, "w") as f:
            json.dump({"settings": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
