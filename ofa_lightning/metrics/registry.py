"""The metric registry: each metric class registers itself under a name with :func:`register_metric`; a task
names the metrics it feeds (``Task.metrics``) and the training module builds them with :func:`build_metric`.
A metric of your own registers the same way from your module (imported with the task that names it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torchmetrics import Metric

__all__ = ["METRICS", "register_metric", "build_metric"]

#: registered metric classes by name
METRICS: dict[str, type[Metric]] = {}

M = TypeVar("M", bound=type[Metric])


def register_metric(name: str) -> Callable[[M], M]:
    """Class decorator: ``@register_metric("cider")`` (a later class with the same name replaces the earlier)."""

    def add(cls: M) -> M:
        METRICS[name] = cls
        return cls

    return add


def build_metric(name: str, **kwargs: Any) -> Metric:
    """Instantiate a registered metric by name (see :data:`METRICS`)."""
    try:
        cls = METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}") from None
    return cls(**kwargs)
