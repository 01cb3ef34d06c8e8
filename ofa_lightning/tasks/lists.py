"""Closed lists given as task options (answer sets, class names, object vocabularies): a list or a file."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["load_string_list"]


def load_string_list(value: Any, what: str = "list") -> list[str] | None:
    """A list of strings from an option: a list, or a path to a JSON file (a list; ``{"answers": [...]}``; or a
    ``{string: index}`` mapping such as OFA's ``ans2label``, ordered by index) or a text file (one per line)."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if path.endswith(".json"):
            data = json.loads(text)
            if isinstance(data, Mapping):
                if "answers" in data and isinstance(data["answers"], list):
                    data = data["answers"]
                elif all(isinstance(v, int) for v in data.values()):
                    data = [k for k, _ in sorted(data.items(), key=lambda kv: kv[1])]
                else:
                    data = list(data)
            value = data
        else:
            value = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"{what} must be a list of strings or a file path, got {type(value).__name__}")
    out = []
    for v in value:
        if isinstance(v, Mapping) and "answer" in v:  # [{"answer": ..., "count": ...}] style
            v = v["answer"]
        if not isinstance(v, str):
            raise ValueError(f"{what} entries must be strings, got {v!r}")
        out.append(v)
    return out
