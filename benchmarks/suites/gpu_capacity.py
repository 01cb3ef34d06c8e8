"""Largest training batch of the big sizes on one GPU: with activation checkpointing (encoder/decoder layers and
ResNet bottlenecks), and with the same model under FSDP as the kit's ``trainer=fsdp`` sets it up (PyTorch's
``FullyShardedDataParallel``, FULL_SHARD, one unit per encoder/decoder layer, Lightning's ``bf16-mixed`` FSDP
precision) on a process group of one rank. With one rank there is nothing to shard: PyTorch runs FULL_SHARD as
NO_SHARD, so the FSDP row shows what the wrapper itself costs or saves on the card.

Each size is built once; each probe is one training step with a fresh optimiser at that batch (doubling, then
bisection on out-of-memory, within the part's time share).
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import time

import torch
from gpu_parts import Step, build, is_oom, loss_fn, make_batch, sync
from torch import nn

MODES = ("activation checkpointing", "activation checkpointing + FSDP (trainer=fsdp)")


@contextlib.contextmanager
def one_rank_group(device):
    """A process group of world size 1 (NCCL on a GPU, gloo on the CPU), unless one exists already."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="ofa_gpu_pg_") as tmp:
        store = dist.FileStore(os.path.join(tmp, "store"), 1)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


class LossModule(nn.Module):
    """The training loss as a module's forward, so FSDP's root hooks run around it (Lightning does the same with its
    module wrapper)."""

    def __init__(self, model, device):
        super().__init__()
        self.model, self.device = model, device

    def forward(self, batch: dict) -> torch.Tensor:
        return loss_fn(self.model, batch, self.device)


def fsdp_wrap(model, device):
    from pytorch_lightning.plugins.precision import FSDPPrecision
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from ofa_lightning.model.layers import DecoderLayer, EncoderLayer

    return FullyShardedDataParallel(
        LossModule(model, device),
        auto_wrap_policy=ModuleWrapPolicy({EncoderLayer, DecoderLayer}),
        sharding_strategy=ShardingStrategy.FULL_SHARD,
        mixed_precision=FSDPPrecision("bf16-mixed").mixed_precision_config,
        device_id=torch.cuda.current_device() if device.type == "cuda" else None,
        use_orig_params=True,
    )


def free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fits(make_step, batch: int, device) -> bool:
    step = None
    try:
        step = make_step(batch)
        step()
        sync(device)
        return True
    except (RuntimeError, torch.OutOfMemoryError) as exc:
        if not is_oom(exc):
            raise
        return False
    finally:
        if step is not None:
            step.opt.zero_grad(set_to_none=True)
            step.model.zero_grad(set_to_none=True)
        del step
        free(device)


def search(make_step, label: str, size: str, cfg, device, log, deadline: float) -> dict:
    """Largest batch (doubling, then bisection) for which one training step fits."""
    good, bad, bs = 0, None, cfg.max_batch_start
    while bad is None and time.perf_counter() < deadline and bs <= cfg.max_batch_cap:
        ok = fits(make_step, bs, device)
        log(f"max batch {size} ({label}): batch {bs} {'fits' if ok else 'OOM'}")
        if ok:
            good, bs = bs, bs * 2
        else:
            bad = bs
    while bad is not None and bad - good > max(1, good // 8) and time.perf_counter() < deadline:
        mid = (good + bad) // 2
        ok = fits(make_step, mid, device)
        log(f"max batch {size} ({label}): batch {mid} {'fits' if ok else 'OOM'}")
        good, bad = (mid, bad) if ok else (good, mid)
    return {
        "size": size,
        "mode": label,
        "px": cfg.px,
        "largest_batch_found": good,
        "first_oom_batch": bad,
        "capped": bad is None and bs > cfg.max_batch_cap,
        "complete": bad is not None and bad - good <= max(1, good // 8),
    }


def part_max_batch(size: str, cfg, device, log, deadline: float) -> list[dict]:
    """Both modes for one size, the time share split between them; a mode that cannot run gets a row saying why."""
    try:
        return both_modes(size, cfg, device, log, deadline)
    finally:
        free(device)  # the model is gone with both_modes' frame


def both_modes(size: str, cfg, device, log, deadline: float) -> list[dict]:
    if time.perf_counter() >= deadline:
        log(f"max batch {size}: skipped: time budget")
        return [{"size": size, "mode": mode, "px": cfg.px, "skipped": "time budget"} for mode in MODES]
    model = build(size, device, checkpointing=True)
    rows = []

    def plain(bs):
        return Step(model, make_batch(bs, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab), device)

    half = time.perf_counter() + (deadline - time.perf_counter()) / 2
    rows.append(search(plain, MODES[0], size, cfg, device, log, half))
    try:
        with one_rank_group(device):
            wrapped = fsdp_wrap(model, device)

            def sharded(bs):
                b = make_batch(bs, cfg.px, cfg.src, cfg.tgt, device, vocab=cfg.vocab)
                step = Step(model, b, device, loss=lambda: wrapped(b), params=wrapped.parameters())
                return step

            rows.append(search(sharded, MODES[1], size, cfg, device, log, deadline))
    except RuntimeError as exc:
        if is_oom(exc):
            raise
        # PyTorch's FSDP needs an accelerator: on the CPU (the dry run) it refuses here, after the process group
        reason = f"{type(exc).__name__}: {exc}"[:200]
        rows.append({"size": size, "mode": MODES[1], "px": cfg.px, "skipped": reason})
        log(f"max batch {size} ({MODES[1]}): skipped: {reason}")
    return rows
