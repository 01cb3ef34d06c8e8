"""Non-finite loss / gradient guard: detect at the step, skip the update, count, and stop a run that keeps failing.

``OFALitModule`` asks the guard after computing each training loss (agreed across ranks, so every rank skips the
same steps) and, before each optimiser step, whether the gradients are finite (after DDP's all-reduce, so the
ranks agree without another collective; skipped when an AMP ``GradScaler`` is active, because the scaler already
skips steps with inf/NaN gradients and backs off its scale — overflowing fp16 gradients are its normal business).

A skipped step changes nothing: no weight, optimiser moment, weight decay or EMA update. It still counts as a
step: ``global_step``, the LR schedule, the data position and the checkpoint cadence advance (Lightning's step
counter is the optimiser-step counter, and keeping one clock for data, schedule and checkpoints is what makes a
resumed run exact). Skips are logged as ``train/skipped_nonfinite`` and stored in checkpoints.

After ``max_consecutive`` skipped steps in a row the guard raises :class:`NonFiniteLossError` naming the step,
what was non-finite and the tasks in the batch (and which of them had a non-finite loss): a diverged run stops
instead of burning its budget on skipped steps. ``max_consecutive: 0`` never stops.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["NonFiniteGuard", "NonFiniteLossError", "batch_task_counts", "grads_are_finite"]

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Too many consecutive non-finite training steps."""


def batch_task_counts(batch: Any) -> dict[str, int]:
    """``{task name: rows}`` of a plain or grouped (``batch["groups"]``) training batch."""
    counts: Counter[str] = Counter()
    if not isinstance(batch, Mapping):
        return {}
    groups = batch.get("groups")
    if isinstance(groups, Mapping):
        for sub in groups.values():
            counts.update(batch_task_counts(sub))
        return dict(counts)
    counts.update(str(t) for t in (batch.get("tasks") or []))
    return dict(counts)


def grads_are_finite(parameters: Iterable[torch.nn.Parameter]) -> bool:
    """True when every gradient is finite (one fused norm per device and one host sync)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return True
    by_device: dict[torch.device, list[Tensor]] = {}
    for g in grads:
        by_device.setdefault(g.device, []).append(g.detach())
    norms = []
    for device_grads in by_device.values():
        norms.extend(n.float() for n in torch._foreach_norm(device_grads))
    first = norms[0].device
    return bool(torch.isfinite(torch.stack([n.to(first) for n in norms])).all())


@dataclass
class NonFiniteGuard:
    """Counts skipped steps; raises after ``max_consecutive`` in a row (0 = never)."""

    max_consecutive: int = 10
    check_grads: bool = True
    total: int = 0
    consecutive: int = 0
    last: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_any(cls, value: Any) -> NonFiniteGuard:
        if isinstance(value, NonFiniteGuard):
            return value
        if value is None:
            return cls()
        if isinstance(value, Mapping):
            unknown = set(value) - {"max_consecutive", "check_grads"}
            if unknown:
                raise ValueError(f"unknown nonfinite options {sorted(unknown)} (known: max_consecutive, check_grads)")
            guard = cls(**dict(value))
            if int(guard.max_consecutive) < 0:
                raise ValueError(f"nonfinite.max_consecutive must be >= 0, got {guard.max_consecutive}")
            guard.max_consecutive = int(guard.max_consecutive)
            return guard
        raise TypeError(f"nonfinite must be a mapping, got {type(value).__name__}")

    def options(self) -> dict[str, Any]:
        return {"max_consecutive": self.max_consecutive, "check_grads": self.check_grads}

    def ok(self) -> None:
        """An update was applied: the run of skips is over."""
        self.consecutive = 0

    def skip(
        self,
        step: int,
        what: str,
        batch: Any = None,
        per_task: Mapping[str, Any] | None = None,
        tasks: Mapping[str, int] | None = None,
    ) -> None:
        """Record a skipped step (``what``: "loss" or "gradient"); raise when too many came in a row. The batch's
        tasks come from ``tasks`` (``{name: rows}``) or ``batch``; ``per_task`` (``LossOutput.per_task``) names the
        tasks whose loss was not finite."""
        self.total += 1
        self.consecutive += 1
        tasks = dict(tasks) if tasks is not None else batch_task_counts(batch)
        bad = sorted(
            name
            for name, (s, _) in (per_task or {}).items()
            if isinstance(s, Tensor) and not bool(torch.isfinite(s.detach()).all())
        )
        self.last = {"step": int(step), "what": what, "tasks": tasks, "nonfinite_tasks": bad}
        where = ", ".join(f"{k}×{v}" for k, v in sorted(tasks.items())) or "unknown"
        log.warning(
            "non-finite %s at step %d (tasks in the batch: %s%s): update skipped (%d in a row, %d in all)",
            what,
            step,
            where,
            f"; non-finite in: {', '.join(bad)}" if bad else "",
            self.consecutive,
            self.total,
        )
        if self.max_consecutive and self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"{self.consecutive} consecutive training steps had a non-finite {what}; the last at step {step}, "
                f"tasks in its batch: {where}"
                + (f" (non-finite loss in: {', '.join(bad)})" if bad else "")
                + f". {self.total} steps were skipped in all. Lower the learning rate, check the data of these "
                "tasks or use bf16/fp32; raise module.nonfinite.max_consecutive (0 = never stop) to go on anyway."
            )

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "consecutive": self.consecutive, "last": dict(self.last)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.total = int(state.get("total", 0))
        self.consecutive = int(state.get("consecutive", 0))
        self.last = dict(state.get("last") or {})

    def __repr__(self) -> str:  # pragma: no cover
        return f"NonFiniteGuard({asdict(self)})"
