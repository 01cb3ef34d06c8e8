"""``ThroughputMonitor``: samples/s, tokens/s, loader wait and an MFU estimate, logged from rank 0.

Logged every ``log_every_n_steps`` optimizer steps (the Trainer's by default, on Lightning's cadence and at
Lightning's logger step, so ``perf/*`` lines up with ``train/*``), as averages over the last ``window`` training
batches (``perf/`` prefix):

``samples_per_s``       global: rank-0 samples per wall second (wait + step, over the window's batches whose wait
                        was measured) × world size (assumes balanced ranks)
``tokens_per_s``        global, source + target non-pad tokens (``input_ids`` and ``target`` ≠ PAD; every group
                        of a grouped batch), × world size
``step_time_s``         mean host time from ``on_train_batch_start`` to ``on_train_batch_end`` (forward,
                        backward, optimizer step). On CUDA this is launch time unless kernels block (``.item()``,
                        the optimizer's non-finite check, …); ``cuda_sync=True`` synchronises at batch end so it is
                        exact (and costs some overlap)
``data_wait_s``         median over the window of the gap between the end of one batch and the start of the next:
                        the loader's ``next()`` plus whatever later callbacks and loggers do in between (e.g. a
                        checkpoint write at its step: hence the median, robust to such spikes; ``data_wait_max_s``
                        shows them). The gap after a validation run is not counted. "Never waits on data" ⇔
                        ``data_wait_frac`` (waits / wall time) ≈ 0
``tflops``              achieved model TFLOP/s per device (``flops_per_sample`` × per-device samples/s)
``mfu``                 ``tflops`` / the device's peak

FLOPs per sample: ``flops_per_sample`` if given (an analytic count of forward + backward, ≈ 3 × forward),
otherwise measured once with ``torch.utils.flop_counter.FlopCounterMode`` around the first training batch (forward,
backward and optimizer step of the real step: matmuls, convolutions and attention are counted, element-wise ops are
not — the usual MFU convention) divided by its sample count. The measured batch and the first ``warmup_steps``
batches are left out of the averages (counting, compilation, allocator warm-up). Measurement is skipped for
``torch.compile`` d modules (``OFALitModule(compile=True)``): give ``flops_per_sample`` then. With variable-length
batches the first batch's FLOPs per sample is only an estimate of the average.

Peak FLOP/s: ``peak_flops`` if given, else a dense (no sparsity) figure for the device and the Trainer's precision
(:data:`PEAK_FLOPS`: H100 SXM/H200 bf16 989e12, tf32 495e12, fp32 67e12; A100 bf16 312e12; CPU 300e9 — a rough
figure for the 2-core dev box, fp32 AVX2/AVX-512 FMA at ~3 GHz; override it for other CPUs). No figure → no ``mfu``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from ..tracking import logger_step

__all__ = ["ThroughputMonitor", "PEAK_FLOPS", "peak_flops_for", "batch_counts"]

log = logging.getLogger(__name__)

#: dense peak FLOP/s by device family and math mode (``bf16`` also stands for fp16)
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "h100 pcie": {"bf16": 756e12, "tf32": 378e12, "fp32": 51.2e12},
    "h100": {"bf16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "h200": {"bf16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "a100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "cpu": {"bf16": 300e9, "tf32": 300e9, "fp32": 300e9},
}


def _math_mode(precision: Any, cuda: bool) -> str:
    p = str(precision or "32")
    if "16" in p:  # bf16-mixed, 16-mixed, bf16-true, 16-true
        return "bf16"
    if cuda and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "fp32"


def peak_flops_for(device: torch.device | str, precision: Any = "32-true") -> float | None:
    """Dense peak FLOP/s of one device in the Trainer's precision (:data:`PEAK_FLOPS`), or None when unknown."""
    device = torch.device(device)
    if device.type == "cpu":
        family = "cpu"
    elif device.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device).lower()
        family = next((k for k in PEAK_FLOPS if k != "cpu" and all(w in name for w in k.split())), None)
        if family is None:
            return None
    else:
        return None
    return PEAK_FLOPS[family][_math_mode(precision, device.type == "cuda")]


def batch_counts(batch: Any, pad_id: int) -> tuple[int, Tensor | int]:
    """(samples, non-pad source + target tokens) of a collated batch (grouped batches: every group). The token
    count stays a tensor on the batch's device (no host sync)."""
    if isinstance(batch, Mapping):
        if "groups" in batch and isinstance(batch["groups"], Mapping):
            samples, tokens = 0, 0
            for sub in batch["groups"].values():
                s, t = batch_counts(sub, pad_id)
                samples, tokens = samples + s, tokens + t
            return int(batch.get("size") or samples), tokens
        ids, target = batch.get("input_ids"), batch.get("target")
        tokens: Tensor | int = 0
        for t in (ids, target):
            if isinstance(t, Tensor) and t.dim() >= 1:
                tokens = tokens + t.ne(pad_id).sum()
        if batch.get("size") is not None:
            return int(batch["size"]), tokens
        if isinstance(ids, Tensor) and ids.dim() >= 1:
            return int(ids.size(0)), tokens
        first = next((v for v in batch.values() if isinstance(v, Tensor) and v.dim() >= 1), None)
        return (int(first.size(0)) if first is not None else 0), tokens
    if isinstance(batch, Tensor):
        return (int(batch.size(0)) if batch.dim() else 1), 0
    if isinstance(batch, Sequence) and batch and isinstance(batch[0], Tensor):
        return int(batch[0].size(0)), 0
    return 0, 0


def _is_compiled(pl_module: torch.nn.Module) -> bool:
    if any(c is not None for c in (getattr(pl_module, "_compiled", None) or ())):
        return True
    optimized = getattr(getattr(torch, "_dynamo", None), "eval_frame", None)
    optimized = getattr(optimized, "OptimizedModule", None)
    return optimized is not None and any(isinstance(m, optimized) for m in pl_module.modules())


class ThroughputMonitor(Callback):
    """Throughput, loader wait and MFU of the training loop (see the module doc for definitions).

    Args:
        window: batches averaged over.
        log_every_n_steps: optimizer steps between logs (default: the Trainer's ``log_every_n_steps``).
        flops_per_sample: training FLOPs (forward + backward) per sample; None: measure on the first batch.
        measure_flops: measure when ``flops_per_sample`` is None.
        peak_flops: peak FLOP/s of one device; None: :func:`peak_flops_for` the Trainer's device and precision.
        pad_id: PAD id for token counts; None: ``pl_module.pad_id`` if it has one, else 1 (OFA's).
        warmup_steps: first training batches left out of the averages.
        cuda_sync: ``torch.cuda.synchronize()`` at each batch end, for exact step times.
        prefix: key prefix.
    """

    def __init__(
        self,
        window: int = 20,
        log_every_n_steps: int | None = None,
        flops_per_sample: float | None = None,
        measure_flops: bool = True,
        peak_flops: float | None = None,
        pad_id: int | None = None,
        warmup_steps: int = 1,
        cuda_sync: bool = False,
        prefix: str = "perf/",
    ):
        self.window = max(1, int(window))
        self.log_every_n_steps = log_every_n_steps
        self.flops_per_sample = float(flops_per_sample) if flops_per_sample else None
        self.measure_flops = bool(measure_flops)
        self.peak_flops = float(peak_flops) if peak_flops else None
        self.pad_id = pad_id
        self.warmup_steps = max(0, int(warmup_steps))
        self.cuda_sync = bool(cuda_sync)
        self.prefix = prefix
        self.last_metrics: dict[str, float] = {}
        self._reset()

    def _reset(self) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=self.window)
        self._last_end: float | None = None
        self._start: float | None = None
        self._wait: float | None = None
        self._counts: tuple[int, Tensor | int] = (0, 0)
        self._seen = 0
        self._last_logged_step = -1
        self._counter: Any = None
        self._skip_this = False

    # ------------------------------------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()
        if self.peak_flops is None:
            self.peak_flops = peak_flops_for(pl_module.device, trainer.precision)
        if self.pad_id is None:
            self.pad_id = int(getattr(pl_module, "pad_id", 1))

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self._wait = now - self._last_end if self._last_end is not None else None
        self._counts = batch_counts(batch, self.pad_id if self.pad_id is not None else 1)
        self._skip_this = self._seen < self.warmup_steps
        if self.flops_per_sample is None and self.measure_flops and self._counter is None:
            if _is_compiled(pl_module):
                log.warning(
                    "ThroughputMonitor: the module is compiled, FLOPs are not measured (give "
                    "flops_per_sample for perf/mfu)"
                )
                self.measure_flops = False
            else:
                from torch.utils.flop_counter import FlopCounterMode

                self._counter = FlopCounterMode(display=False)
                self._counter.__enter__()
                self._skip_this = True
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:
            return
        if self.cuda_sync and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        end = time.perf_counter()
        step_time = end - self._start
        if self._counter is not None:
            self._finish_counting(self._counts[0])
        self._seen += 1
        if not self._skip_this:
            samples, tokens = self._counts
            self._entries.append({"samples": samples, "tokens": tokens, "wait": self._wait, "step": step_time})
        self._start = None
        if trainer.is_global_zero and self._should_log(trainer):
            self._log(trainer)
        self._last_end = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_end = None  # the gap around a validation run is not loader wait

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_end = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self._counter = None
            self.measure_flops = False

    # ------------------------------------------------------------------------------------------------ helpers
    def _finish_counting(self, samples: int) -> None:
        counter, self._counter = self._counter, None
        counter.__exit__(None, None, None)
        total = float(counter.get_total_flops())
        self.measure_flops = False
        if total > 0 and samples > 0:
            self.flops_per_sample = total / samples
            log.info(
                "ThroughputMonitor: %.3g training FLOPs per sample (measured on the first batch)", self.flops_per_sample
            )
        else:
            log.warning("ThroughputMonitor: no FLOPs counted on the first batch; perf/mfu is not logged")

    def _should_log(self, trainer: pl.Trainer) -> bool:
        every = self.log_every_n_steps or trainer.log_every_n_steps or 50
        step = trainer.global_step
        if not self._entries or step == self._last_logged_step:
            return False
        if step % every == 0 or trainer.should_stop or (trainer.max_steps and step >= trainer.max_steps):
            self._last_logged_step = step
            return True
        return False

    def compute(self, world_size: int = 1) -> dict[str, float]:
        """The window's averages (what is logged, without the prefix)."""
        entries = list(self._entries)
        if not entries:
            return {}
        tokens = [e["tokens"] for e in entries]
        tensors = [t for t in tokens if isinstance(t, Tensor)]
        if tensors:  # one host sync per log
            values = iter(torch.stack([t.detach().float() for t in tensors]).tolist())
            tokens = [next(values) if isinstance(t, Tensor) else float(t) for t in tokens]
        waits = [e["wait"] for e in entries if e["wait"] is not None]
        # rates over the batches whose whole wall time (wait + step) is known; the batch after a validation run
        # has no measured wait and would look faster than it was
        timed = [k for k, e in enumerate(entries) if e["wait"] is not None] or list(range(len(entries)))
        wall = sum(entries[k]["step"] + (entries[k]["wait"] or 0.0) for k in timed)
        samples = sum(entries[k]["samples"] for k in timed)
        out = {
            "samples_per_s": samples / wall * world_size if wall > 0 else 0.0,
            "tokens_per_s": sum(tokens[k] for k in timed) / wall * world_size if wall > 0 else 0.0,
            "step_time_s": sum(e["step"] for e in entries) / len(entries),
        }
        if waits:
            out["data_wait_s"] = statistics.median(waits)
            out["data_wait_max_s"] = max(waits)
            out["data_wait_frac"] = sum(waits) / wall if wall > 0 else 0.0
        if self.flops_per_sample and wall > 0:
            achieved = self.flops_per_sample * samples / wall  # per device
            out["tflops"] = achieved / 1e12
            if self.peak_flops:
                out["mfu"] = achieved / self.peak_flops
        return out

    def _log(self, trainer: pl.Trainer) -> None:
        metrics = {self.prefix + k: float(v) for k, v in self.compute(max(1, trainer.world_size)).items()}
        if not metrics:
            return
        self.last_metrics = metrics
        step = logger_step(trainer)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def state_dict(self) -> dict[str, Any]:
        return {"flops_per_sample": self.flops_per_sample}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("flops_per_sample") and self.flops_per_sample is None:
            self.flops_per_sample = float(state_dict["flops_per_sample"])
