"""Train a small VQ image tokenizer (default preset ``shapes_small``) on the images of WebDataset shards.

    python -m ofa_lightning.training.vq_train --shards data/shapes/shards/coco_caption --image-size 64 \
        --steps 800 --out runs/vq/shapes_small.pt

Loss: L1 + MSE reconstruction (optionally weighted towards pixels that differ from the image's background,
``--fg-weight``) + the quantiser's loss (codebook + β·commitment, or Gumbel KL). No adversarial or
perceptual (LPIPS) term: those need a discriminator schedule and downloaded VGG weights, and flat-colour scenes do
not need them. For the plain vector quantiser the codebook starts from encoder outputs and codes unused over the
last ``restart_every`` steps are re-seeded from random encoder outputs (dead-code restart), which keeps a small
codebook in use after a few hundred steps on a CPU. Gumbel models anneal the temperature from 1.0 to 1/16.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ofa_lightning.vq.model import VQConfig, VQModel, preprocess

__all__ = ["train_vq", "load_shard_images", "main"]

log = logging.getLogger(__name__)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def load_shard_images(
    spec: str | list[str], split: str = "train", image_size: int = 64, max_images: int | None = None
) -> Tensor:
    """Images of a shard spec (folder with a manifest, files, globs) → (N, 3, S, S) in [-1, 1]."""
    from ofa_lightning.data.shards import iter_tar_samples, resolve_shards

    out: list[Tensor] = []
    for url in resolve_shards(spec, split):
        for sample in iter_tar_samples(url):
            ext = next((e for e in IMAGE_EXTS if e in sample), None)
            if ext is None:
                continue
            with Image.open(io.BytesIO(sample[ext])) as img:
                out.append(preprocess(img, image_size))
            if max_images is not None and len(out) >= max_images:
                return torch.stack(out)
    if not out:
        raise ValueError(f"no images found in {spec!r} (split {split!r})")
    return torch.stack(out)


def foreground_weights(pixels: Tensor, fg_weight: float) -> Tensor:
    """Per-pixel loss weights ``1 + fg_weight · d`` (B, 1, H, W), d = the largest channel deviation from the median
    colour of the image's border (a background estimate). Small objects on plain backgrounds — the shapes scenes —
    otherwise cost the reconstruction loss almost nothing and a briefly trained model drops them."""
    border = torch.cat([pixels[:, :, 0], pixels[:, :, -1], pixels[:, :, :, 0], pixels[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values[:, :, None, None]
    return 1 + fg_weight * (pixels - background).abs().amax(dim=1, keepdim=True)


def _seed_codebook(model: VQModel, latents: Tensor, generator: torch.Generator, rows: Tensor | None = None) -> int:
    """Copies random encoder outputs (N, D) into the codebook rows ``rows`` (default: all)."""
    weight = model.quantize.embedding.weight
    rows = torch.arange(weight.size(0), device=weight.device) if rows is None else rows
    if rows.numel() == 0 or latents.size(0) == 0:
        return 0
    pick = torch.randint(0, latents.size(0), (rows.numel(),), generator=generator)
    noise = 0.01 * torch.randn(rows.numel(), latents.size(1), generator=generator)
    with torch.no_grad():
        weight[rows] = (latents[pick] + noise).to(weight)
    return int(rows.numel())


def train_vq(
    images: Tensor,
    config: VQConfig | str = "shapes_small",
    *,
    steps: int = 800,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    restart_every: int = 50,
    log_every: int = 100,
    fg_weight: float = 0.0,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[VQModel, dict[str, Any]]:
    """Trains a VQ model on ``images`` ((N, 3, S, S) in [-1, 1]); returns (model in eval mode, stats)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = VQModel(config).train()
    cfg = model.config
    vq = cfg.quantizer == "vq"
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.9))

    def schedule(s: int) -> float:  # 20-step warm-up, cosine decay
        return min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    n = images.size(0)
    usage = torch.zeros(cfg.n_embed, dtype=torch.long)
    stats: dict[str, Any] = {"losses": []}
    start = time.time()
    for step in range(steps):
        batch = images[torch.randint(0, n, (min(batch_size, n),), generator=gen)]
        if torch.rand((), generator=gen) < 0.5:
            batch = batch.flip(3)
        if not vq:
            model.quantize.temperature = max(1 / 16, math.exp(-4 * step / max(1, steps)))
        if vq and step == 0:
            with torch.no_grad():
                z = model.encode_latent(batch)
            _seed_codebook(model, z.permute(0, 2, 3, 1).reshape(-1, z.size(1)), gen)
        rec, qloss, codes = model(batch)
        err = (rec - batch).abs() + (rec - batch).pow(2)
        if fg_weight:
            err = err * foreground_weights(batch, fg_weight)
        rec_loss = err.mean()
        loss = rec_loss + qloss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        usage += torch.bincount(codes.flatten().cpu(), minlength=cfg.n_embed)
        if vq and restart_every and (step + 1) % restart_every == 0 and step + 1 < steps * 0.9:
            dead = (usage == 0).nonzero().flatten()
            with torch.no_grad():
                z = model.encode_latent(batch)
            _seed_codebook(model, z.permute(0, 2, 3, 1).reshape(-1, z.size(1)), gen, dead)
            usage.zero_()
        entry = {
            "step": step + 1,
            "loss": float(loss.detach()),
            "rec": float(rec_loss.detach()),
            "q": float(qloss.detach()),
        }
        stats["losses"].append(entry)
        if callback is not None:
            callback(step + 1, entry)
        if log_every and (step + 1) % log_every == 0:
            log.info(
                "vq step %d/%d loss %.4f rec %.4f (%.1fs)",
                step + 1,
                steps,
                entry["loss"],
                entry["rec"],
                time.time() - start,
            )
    model.eval()
    with torch.no_grad():
        sample = images[: min(n, 64)]
        rec = model.decode(model.encode(sample))
        stats["eval_l1"] = float((rec - sample).abs().mean())
        stats["codes_used"] = int(model.encode(images[: min(n, 512)]).unique().numel())
    stats["seconds"] = time.time() - start
    return model, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ofa_lightning.training.vq_train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--shards", required=True, nargs="+", help="shard folder(s) / files with images")
    parser.add_argument("--split", default="train")
    parser.add_argument("--preset", default="shapes_small")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fg-weight",
        type=float,
        default=4.0,
        help="extra loss weight on pixels unlike the image's border colour (0 = plain L1 + MSE)",
    )
    parser.add_argument("--out", type=Path, required=True, help="where to save the VQ model (.pt)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images = load_shard_images(args.shards, args.split, args.image_size, args.max_images)
    config = VQConfig.preset(args.preset, resolution=args.image_size)
    model, stats = train_vq(
        images,
        config,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        fg_weight=args.fg_weight,
    )
    model.save(args.out, train_stats={k: v for k, v in stats.items() if k != "losses"})
    print(
        f"saved {args.out}: {len(images)} images, eval L1 {stats['eval_l1']:.4f}, "
        f"{stats['codes_used']}/{config.n_embed} codes used, {stats['seconds']:.0f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
