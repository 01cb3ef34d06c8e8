"""Shared machinery for DDP-safe metrics.

Why this exists (Lightning-AI/torchmetrics#538): torchmetrics only all-gathers *tensor* states. Python strings kept in
list states are silently left rank-local, so every metric here stores its data as tensors:

* strings become UTF-8 byte tensors plus a length tensor (:func:`encode_strings` / :func:`decode_strings`);
* every sample may carry a non-negative integer id. ``DistributedSampler`` pads the last batch with
  repeated samples, so after the gather a sample can appear twice; :func:`first_occurrence_mask` keeps
  the first copy of each id (ids < 0 mean "no id" and are never merged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

IdsLike = Sequence[int] | Tensor | None

NO_ID = -1
"""Id stored for samples updated without ids; such samples are never de-duplicated."""


def encode_strings(strings: Sequence[str], device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Encode strings as (flat uint8 UTF-8 bytes, int64 byte length per string)."""
    blobs = [s.encode("utf-8") for s in strings]
    lengths = torch.tensor([len(b) for b in blobs], dtype=torch.long, device=device)
    flat = b"".join(blobs)
    data = torch.from_numpy(np.frombuffer(flat, dtype=np.uint8).copy()) if flat else torch.empty(0, dtype=torch.uint8)
    return data.to(device), lengths


def decode_strings(data: Tensor, lengths: Tensor) -> list[str]:
    """Inverse of :func:`encode_strings`."""
    raw = data.detach().to("cpu", torch.uint8).numpy().tobytes()
    out, pos = [], 0
    for n in lengths.detach().cpu().tolist():
        out.append(raw[pos : pos + n].decode("utf-8"))
        pos += n
    if pos != len(raw):
        raise RuntimeError(f"corrupt string state: lengths sum to {pos} but {len(raw)} bytes are stored")
    return out


def ids_to_tensor(ids: IdsLike, n: int, device: torch.device | None = None) -> Tensor:
    """Validate ``ids`` (None -> all :data:`NO_ID`) and return an int64 tensor of length ``n``."""
    if ids is None:
        return torch.full((n,), NO_ID, dtype=torch.long, device=device)
    t = (
        ids.detach().reshape(-1).to(device=device)
        if isinstance(ids, Tensor)
        else torch.tensor(list(ids), device=device)
    )
    if t.numel() != n:
        raise ValueError(f"got {t.numel()} ids for {n} samples")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"ids must be integers, got dtype {t.dtype}")
    t = t.to(torch.long)
    if (t < 0).any():
        raise ValueError("ids must be >= 0 (pass ids=None for samples without ids)")
    return t


def first_occurrence_mask(ids: Tensor) -> Tensor:
    """Boolean mask keeping the first occurrence of each id >= 0 and every id < 0."""
    n = ids.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=ids.device)
    uniq, inverse = torch.unique(ids, return_inverse=True)
    positions = torch.arange(n, device=ids.device)
    first = torch.full((uniq.numel(),), n, dtype=torch.long, device=ids.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    mask = torch.zeros(n, dtype=torch.bool, device=ids.device)
    mask[first] = True
    return mask | (ids < 0)


def cat_state(state: Tensor | list[Tensor], empty: Tensor) -> Tensor:
    """Concatenate a ``cat`` list state (a Tensor after a dist sync); ``empty`` if nothing was stored."""
    if isinstance(state, Tensor):
        return state
    return dim_zero_cat(state) if len(state) else empty


class TypedListStateMetric(Metric):
    """Metric base whose ``cat`` list states keep their dtype/shape even on a rank that saw no data.

    torchmetrics substitutes ``torch.tensor([], dtype=metric.dtype)`` (float32, 1-D) for an empty list
    state before the all-gather. If other ranks send uint8 bytes or (B, K) float64 rows, the padded
    ``all_gather`` then mixes dtypes/shapes across ranks (a hang with NCCL). Registering each list state
    with :meth:`add_typed_list_state` lets :meth:`_sync_dist` send a correctly typed empty tensor instead.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._list_state_specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}

    def add_typed_list_state(self, name: str, dtype: torch.dtype, tail_shape: tuple[int, ...] = ()) -> None:
        self.add_state(name, default=[], dist_reduce_fx="cat")
        self._list_state_specs[name] = (tail_shape, dtype)

    def empty_state(self, name: str) -> Tensor:
        tail, dtype = self._list_state_specs[name]
        return torch.empty((0, *tail), dtype=dtype, device=self.device)

    def list_state(self, name: str) -> Tensor:
        return cat_state(getattr(self, name), self.empty_state(name))

    def _sync_dist(self, dist_sync_fn: Callable = None, process_group: Any | None = None) -> None:  # type: ignore[override]
        for name in self._list_state_specs:
            value = getattr(self, name)
            if isinstance(value, list) and len(value) == 0:
                setattr(self, name, [self.empty_state(name)])
        if dist_sync_fn is None:
            super()._sync_dist(process_group=process_group)
        else:
            super()._sync_dist(dist_sync_fn, process_group=process_group)


class SampleScoreMetric(TypedListStateMetric):
    """Mean of K per-sample values with decomposable ``value_sum``/``count`` states.

    Updates without ids only touch ``value_sum`` (float64, shape [K]) and ``count``. Updates with ids
    additionally record per-sample rows (``sample_ids``, ``sample_values`` [B, K]) so that
    :meth:`totals` can drop padded duplicates by id. Mixing the two kinds of update in one evaluation
    is rejected at compute time because the de-duplicated mean would silently ignore samples.
    """

    value_names: tuple[str, ...] = ("value",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        k = len(self.value_names)
        self.add_state("value_sum", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_typed_list_state("sample_ids", torch.long)
        self.add_typed_list_state("sample_values", torch.float64, (k,))

    def _accumulate(self, values: Tensor, ids: IdsLike) -> None:
        """Add per-sample ``values`` ([B] or [B, K]) with optional ``ids``."""
        values = values.detach().to(device=self.device, dtype=torch.float64)
        if values.ndim == 1:
            values = values.unsqueeze(1)
        n = values.shape[0]
        self.value_sum += values.sum(dim=0)
        self.count += n
        if ids is not None:
            self.sample_ids.append(ids_to_tensor(ids, n, self.device))
            self.sample_values.append(values)

    def totals(self) -> tuple[Tensor, Tensor]:
        """(sum of values [K], number of samples) after de-duplication by id when ids were given."""
        ids = self.list_state("sample_ids")
        if ids.numel() == 0:
            return self.value_sum, self.count
        if ids.numel() != int(self.count):
            raise RuntimeError(
                f"{type(self).__name__}: {int(self.count)} samples were updated but only {ids.numel()} carried ids; "
                "pass ids to every update() or to none"
            )
        values = self.list_state("sample_values")
        keep = first_occurrence_mask(ids)
        return values[keep].sum(dim=0), keep.sum()

    def means(self) -> Tensor:
        total, n = self.totals()
        return total / n.clamp_min(1).to(total.dtype)
