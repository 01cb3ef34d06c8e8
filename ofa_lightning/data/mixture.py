"""Task mixtures: which tasks train together, on which shards, in which proportions.

A mixture is written either as a mapping ``name -> entry`` (the form used in ``conf/mixture/*.yaml``: each field can
be overridden from the command line, e.g. ``mixture.vqa.ratio=0.5``; Hydra cannot edit list items) or as a list of
entries (then ``name`` defaults to the task name). Entry keys:

``task``         task name for ``ofa_lightning.tasks.build_task`` (default: the entry's name)
``shards``       shard spec for training (see ``ofa_lightning.data.shards``)
``ratio``        relative sampling weight (> 0; normalised over the mixture)
``split``        split read from a shard folder for training (default ``train``)
``eval_shards``  shard spec for evaluation (default: ``shards``)
``eval_split``   split used for validation (default: the data config's ``eval.split``); ``null``/``false``: no val
``test_split``   split used by ``trainer.test`` (default: the data config's ``eval.test_split``); ``false``: none
``options``      keyword options for the task constructor

Sampling is per example: each next example comes from source ``i`` with probability ``ratio_i / sum(ratios)``,
drawn by a seeded generator per (rank, worker), so the realised mix converges to the configured one on every rank.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MixtureSource", "parse_mixture", "SourceSampler"]

log = logging.getLogger(__name__)


class _Unset:
    """'Not given' marker for eval_split/test_split (None means 'no evaluation'); one instance, also after pickling."""

    def __repr__(self) -> str:
        return "<default>"

    def __reduce__(self) -> str:
        return "_UNSET"


_UNSET: Any = _Unset()
_KEYS = {"name", "task", "shards", "ratio", "split", "eval_shards", "eval_split", "test_split", "options"}


@dataclass
class MixtureSource:
    name: str
    task: str
    shards: Any
    ratio: float = 1.0
    split: str = "train"
    eval_shards: Any = None
    eval_split: Any = _UNSET
    test_split: Any = _UNSET
    options: dict[str, Any] = field(default_factory=dict)

    def resolved_eval_split(self, default: str | None, which: str = "val") -> str | None:
        value = self.eval_split if which == "val" else self.test_split
        if value is _UNSET:
            return default or None
        return value or None

    @property
    def eval_spec(self) -> Any:
        return self.shards if self.eval_shards is None else self.eval_shards


def _plain(obj: Any) -> Any:
    try:  # OmegaConf containers -> plain python, interpolations resolved
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return obj


def parse_mixture(mixture: Any) -> list[MixtureSource]:
    """Mapping or list form -> validated ``MixtureSource`` list (order preserved)."""
    mixture = _plain(mixture)
    if isinstance(mixture, Mapping) and "sources" in mixture and len(mixture) <= 2:
        mixture = mixture["sources"]  # tolerate {name:, sources: ...}
    if isinstance(mixture, Mapping):
        items = [(str(name), entry) for name, entry in mixture.items() if entry is not None]
        # An experiment preset may tune an entry the chosen mixture does not have (experiment=demo sets
        # mixture.vqa.options and .ratio; mixture=caption_only has no vqa): such a settings-only entry is no source.
        options_only = [
            name for name, entry in items if isinstance(entry, Mapping) and entry and set(entry) <= {"options", "ratio"}
        ]
        for name in options_only:  # info: presets tune entries for the mixtures that have them (the usual case)
            log.info(
                "mixture entry %r only sets options/ratio (no task, no shards), so it is not part of this "
                "mixture and is ignored; give it `task` and `shards` to train on it",
                name,
            )
        items = [(name, entry) for name, entry in items if name not in options_only]
    elif isinstance(mixture, Sequence) and not isinstance(mixture, str):
        items = [(None, entry) for entry in mixture]
    else:
        raise TypeError(f"a mixture is a mapping name -> entry or a list of entries, got {type(mixture).__name__}")
    sources: list[MixtureSource] = []
    for name, entry in items:
        if not isinstance(entry, Mapping):
            raise TypeError(f"mixture entry {name or len(sources)} must be a mapping, got {entry!r}")
        unknown = set(entry) - _KEYS
        if unknown:
            raise ValueError(
                f"mixture entry {name or entry.get('task')!r}: unknown keys {sorted(unknown)} "
                f"(known: {sorted(_KEYS)}; task options go under 'options')"
            )
        task = entry.get("task", name)
        if not task:
            raise ValueError(f"mixture entry {entry!r} names no task")
        if entry.get("shards") in (None, "", []):
            raise ValueError(f"mixture entry {name or task!r} has no shards")
        ratio = entry.get("ratio", 1.0)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
            raise ValueError(f"mixture entry {name or task!r}: ratio must be a positive number, got {ratio!r}")
        kwargs = {k: entry[k] for k in ("split", "eval_shards", "eval_split", "test_split") if k in entry}
        sources.append(
            MixtureSource(
                name=str(entry.get("name", name or task)),
                task=str(task),
                shards=entry["shards"],
                ratio=float(ratio),
                options=dict(entry.get("options") or {}),
                **kwargs,
            )
        )
    if not sources:
        raise ValueError("the mixture is empty")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"mixture source names must be unique, got {names}")
    return sources


class SourceSampler:
    """Draws source indices with probabilities proportional to ``ratios`` from a given ``random.Random``."""

    def __init__(self, ratios: Sequence[float]):
        total = float(sum(ratios))
        if not ratios or total <= 0:
            raise ValueError("ratios must be positive")
        self.probs = [r / total for r in ratios]
        self._cum = list(itertools.accumulate(self.probs))
        self._cum[-1] = 1.0

    def __call__(self, rng: random.Random) -> int:
        return bisect.bisect_right(self._cum, rng.random())
