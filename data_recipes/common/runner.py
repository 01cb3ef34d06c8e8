"""Drives a recipe: candidates -> checked samples -> atomic shards + manifest, with resume.

Re-runs: complete splits are left alone (checked by size, or sha256 with --verify); an incomplete split
keeps its leading shards that are intact on disk and continues from the first raw candidate after them,
which works because candidates come in a deterministic order (shuffling is seeded). A run with other
arguments than the manifest records refuses to mix outputs unless --overwrite. Leftover `*.partial` files
from a killed run are deleted first; a lock file keeps two runs off the same folder.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import os
import random
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm import tqdm

from data_recipes.common.disk_index import KeySet
from data_recipes.common.errors import BadSample, PrepareError
from data_recipes.common.files import clear_run_caches
from data_recipes.common.manifest import (
    MANIFEST_NAME,
    MAX_SKIP_RECORDS,
    SIZES_NAME,
    load_manifest,
    new_manifest,
    save_manifest,
    sha256_file,
)
from data_recipes.common.parallel import ordered_map
from data_recipes.common.sample import Candidate, Sample
from data_recipes.common.writer import PARTIAL_SUFFIX, ShardWriter, encode_fields

#: Options that do not change what a split contains, so a re-run may differ in them.
_NOT_COMPARED = {"recipe", "list", "out", "splits", "overwrite", "strict", "verify", "quiet"}
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_+\-]+$")
_SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_+\-]+)-(?P<index>\d{6})\.tar$")
LOCK_NAME = ".ofa-prepare.lock"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def manifest_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: _jsonable(v) for k, v in sorted(vars(args).items()) if k not in _NOT_COMPARED and not k.startswith("_")}


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"ofa-prepare: {message}", file=sys.stderr)


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    handle = open(out / LOCK_NAME, "w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PrepareError(f"another ofa-prepare run is writing to {out}") from None
        yield
    finally:
        handle.close()


def _remove_partials(out: Path) -> list[str]:
    removed = []
    for path in out.iterdir():
        if path.name.endswith(PARTIAL_SUFFIX) and path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


def _shard_files(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if _SHARD_NAME.match(p.name) and p.is_file())


def _clear(out: Path, manifest: dict[str, Any] | None) -> None:
    """--overwrite: delete our shards, extras and manifest (only names this tool writes)."""
    for path in _shard_files(out):
        path.unlink()
    for name in list((manifest or {}).get("extras", {})) + [MANIFEST_NAME, SIZES_NAME]:
        target = out / name
        if "/" not in name and target.is_file():
            target.unlink()


def _requested_splits(recipe: ModuleType, args: argparse.Namespace) -> list[str]:
    available = list(recipe.available_splits(args))
    if args.splits:
        splits = [s.strip() for s in args.splits.split(",") if s.strip()]
        unknown = [s for s in splits if s not in available]
        if unknown:
            raise PrepareError(
                f"{recipe.NAME}: no input for split(s) {', '.join(unknown)}; "
                f"the inputs provide: {', '.join(available) or 'none'}"
            )
    else:
        splits = available
    if not splits:
        raise PrepareError(f"{recipe.NAME}: the inputs provide no split at all")
    for split in splits:
        if not _SPLIT_NAME.match(split):
            raise PrepareError(f"split name {split!r} may only hold letters, digits, '_', '+' and '-'")
    return splits


def _shard_ok(out: Path, shard: dict[str, Any], verify: bool) -> bool:
    path = out / shard["file"]
    if not path.is_file() or path.stat().st_size != shard["bytes"]:
        return False
    return not verify or sha256_file(path) == shard["sha256"]


def _new_counters(first_index: int) -> dict[str, Any]:
    return {"first_index": first_index, "end_index": first_index, "num_skipped": 0, "skip_reasons": {}, "warnings": {}}


def _count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


def _attempt(item: tuple[int, Candidate], source: str, split: str) -> tuple[Sample | None, bytes | None, str | None]:
    """Builds one candidate: (sample, its JSON bytes, None) or (None, None, skip reason). Runs in workers."""
    _, cand = item
    try:
        sample = cand.build()
        if sample.key != cand.key:
            raise RuntimeError(f"{source}: built key {sample.key!r} != candidate key {cand.key!r}")
        fields = dict(sample.fields)
        fields.update(id=sample.key, source=source, split=split)
        return sample, encode_fields(fields), None
    except BadSample as exc:
        return None, None, str(exc)


def _workers(recipe: ModuleType, args: argparse.Namespace) -> int:
    """Worker processes for recipes whose candidates can be pickled (PARALLEL_BUILD); 1 for the others."""
    if not getattr(recipe, "PARALLEL_BUILD", False):
        return 1
    return getattr(args, "workers", None) or max(1, min(8, os.cpu_count() or 1))


class _FailureGuard:
    """Stops a split where most rows fail (wrong column, image root or box format), naming the first errors."""

    CHECKS_AT = (20, 100, 1000)
    FIRST_ERRORS = 5

    def __init__(self, recipe: str, split: str, max_fraction: float | None):
        self.recipe, self.split, self.max_fraction = recipe, split, max_fraction
        self.rows = self.bad = 0
        self.first: list[str] = []

    def add(self, origin: str, reason: str | None) -> None:
        self.rows += 1
        if reason is not None:
            self.bad += 1
            if len(self.first) < self.FIRST_ERRORS:
                self.first.append(f"{origin}: {reason}")
        if self.rows in self.CHECKS_AT or self.rows % 10_000 == 0:
            self.check(final=False)

    def check(self, final: bool) -> None:
        if self.max_fraction is None or self.max_fraction >= 1 or self.rows == 0:
            return
        if self.bad > self.max_fraction * self.rows:
            rows = f"{self.rows} rows" if final else f"the first {self.rows} rows"
            raise PrepareError(
                f"{self.recipe}/{self.split}: {self.bad} of {rows} failed "
                f"(more than {self.max_fraction:.0%}); first errors: "
                + "; ".join(self.first)
                + ". Check --map, --image-column, --image-root and --box-format "
                "(or raise --max-bad-fraction)"
            )


def _run_split(
    recipe: ModuleType, args: argparse.Namespace, out: Path, manifest: dict[str, Any], split: str, seen: KeySet
) -> None:
    state = manifest["splits"].get(split)
    if state is not None and state.get("complete"):
        if all(_shard_ok(out, s, args.verify) for s in state["shards"]):
            _say(
                args,
                f"{recipe.NAME}/{split}: already complete ({state['num_samples']} samples); use --overwrite to rebuild",
            )
            return
        state["complete"] = False
    if state is None:
        state = {"complete": False, "shards": [], "skipped": [], "tail": None}
        manifest["splits"][split] = state

    valid = []
    for shard in state["shards"]:
        if not _shard_ok(out, shard, args.verify):
            break
        valid.append(shard)
    state["shards"] = valid
    state["tail"] = None
    consumed = valid[-1]["end_index"] if valid else 0
    state["skipped"] = [s for s in state["skipped"] if s["index"] < consumed]
    skipped_before = {s["index"] for s in state["skipped"]}
    written = sum(s["num_samples"] for s in valid)
    if valid:
        _say(args, f"{recipe.NAME}/{split}: resuming after {len(valid)} complete shard(s) ({written} samples)")

    candidates = recipe.candidates(args, split)
    if args.shuffle:
        candidates = list(candidates)
        random.Random(f"{args.seed}/{split}").shuffle(candidates)
    total = len(candidates) if isinstance(candidates, list) else None

    counters = _new_counters(consumed)
    writer: ShardWriter | None = None
    next_index = consumed
    bar = tqdm(total=total, desc=f"{recipe.NAME}/{split}", unit="sample", disable=args.quiet, leave=False)
    failures = _FailureGuard(recipe.NAME, split, getattr(args, "max_bad_fraction", None))

    def todo() -> Iterator[tuple[int, Candidate]]:
        for index, cand in enumerate(candidates):
            if index < consumed:
                bar.update(1)
                if index not in skipped_before:
                    seen.add(cand.key)
                continue
            yield index, cand

    results = ordered_map(functools.partial(_attempt, source=recipe.NAME, split=split), todo(), _workers(recipe, args))
    try:
        for (index, cand), (sample, payload, reason) in results:
            bar.update(1)
            if args.max_samples is not None and written >= args.max_samples:
                break
            next_index = index + 1
            if cand.key in seen:
                reason = f"duplicate id: {cand.key} was already written"
            if reason is not None:
                if args.strict:
                    raise PrepareError(f"{cand.origin}: sample {cand.key}: {reason}")
                counters["num_skipped"] += 1
                _count(counters["skip_reasons"], reason.split(":", 1)[0])
                if len(state["skipped"]) < MAX_SKIP_RECORDS:
                    state["skipped"].append({"index": index, "id": cand.key, "reason": reason, "origin": cand.origin})
                bar.set_postfix(skipped=sum(s["num_skipped"] for s in state["shards"]) + counters["num_skipped"])
                failures.add(cand.origin, reason)
                continue
            failures.add(cand.origin, None)
            seen.add(sample.key)
            for warning in sample.warnings:
                _count(counters["warnings"], warning)
            if writer is None:
                writer = ShardWriter(out / f"{split}-{len(state['shards']):06d}.tar")
            writer.add(sample, payload)
            written += 1
            if writer.num_samples >= args.shard_size or writer.size >= args.shard_bytes:
                info = writer.commit()
                writer = None
                counters["end_index"] = next_index
                state["shards"].append(
                    {
                        "file": info.file,
                        "num_samples": info.num_samples,
                        "bytes": info.bytes,
                        "sha256": info.sha256,
                        **counters,
                    }
                )
                counters = _new_counters(next_index)
                save_manifest(out, manifest)
        failures.check(final=True)
        counters["end_index"] = next_index
        if writer is not None:
            info = writer.commit()
            writer = None
            state["shards"].append(
                {
                    "file": info.file,
                    "num_samples": info.num_samples,
                    "bytes": info.bytes,
                    "sha256": info.sha256,
                    **counters,
                }
            )
            counters = _new_counters(next_index)
        state["tail"] = counters
        state["complete"] = True
    finally:
        results.close()
        bar.close()
        if writer is not None:
            writer.abort()
        save_manifest(out, manifest)

    keep = {s["file"] for s in state["shards"]}
    for path in _shard_files(out):
        match = _SHARD_NAME.match(path.name)
        if match["split"] == split and path.name not in keep:
            path.unlink()
    save_manifest(out, manifest)
    done = manifest["splits"][split]
    _say(
        args,
        f"{recipe.NAME}/{split}: {done['num_samples']} samples in {len(done['shards'])} shard(s), "
        f"{done['num_skipped']} skipped",
    )


def run_recipe(recipe: ModuleType, args: argparse.Namespace) -> dict[str, Any]:
    """Writes the requested splits of `recipe` into args.out and returns the manifest."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    clear_run_caches()
    with _locked(out):
        removed = _remove_partials(out)
        if removed:
            _say(args, f"removed {len(removed)} partial file(s) left by an interrupted run")
        manifest = load_manifest(out)
        wanted_args = manifest_args(args)
        if args.overwrite:
            _clear(out, manifest)
            manifest = None
        elif manifest is not None:
            if manifest["recipe"] != recipe.NAME:
                raise PrepareError(
                    f"{out} holds shards of recipe {manifest['recipe']!r}, not {recipe.NAME!r}; "
                    "use another --out or --overwrite"
                )
            if manifest["args"] != wanted_args:
                changed = sorted(
                    k for k in set(manifest["args"]) | set(wanted_args) if manifest["args"].get(k) != wanted_args.get(k)
                )
                raise PrepareError(
                    f"{out} holds shards written with other arguments (differs in: "
                    f"{', '.join(changed)}); rerun with the same arguments to continue, or "
                    "--overwrite to rebuild"
                )
        elif _shard_files(out):
            raise PrepareError(
                f"{out} holds shard files but no {MANIFEST_NAME}; use --overwrite to replace them or another --out"
            )
        if manifest is None:
            manifest = new_manifest(recipe.NAME, wanted_args)
        splits = _requested_splits(recipe, args)
        seen = KeySet()  # ids written so far, on disk: memory stays flat however many rows there are
        try:
            for split in splits:
                _run_split(recipe, args, out, manifest, split, seen)
        finally:
            seen.close()
        write_extras = getattr(recipe, "write_extras", None)
        if write_extras is not None:
            manifest["extras"].update(write_extras(args, out))
        manifest["complete"] = all(s.get("complete") for s in manifest["splits"].values())
        save_manifest(out, manifest)
    return manifest
