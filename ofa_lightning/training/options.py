"""One way to read a config section into a dataclass: ``from_any`` (None, the dataclass, or a mapping)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

T = TypeVar("T", bound="Options")


class Options:
    """Mixin for the training dataclasses; unknown keys raise and name the known ones."""

    section = "options"  # how error messages call this config section

    @classmethod
    def from_any(cls: type[T], value: T | Mapping[str, Any] | None) -> T:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        data = dict(value)
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.section} options {unknown}; known: {known}")
        return cls(**cls.defaults_for(data))

    @classmethod
    def defaults_for(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Hook: fill implied values (e.g. a given EMA section means enabled)."""
        return data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
