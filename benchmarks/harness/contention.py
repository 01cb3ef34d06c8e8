"""Timing on a shared machine: tell clean measurements from ones disturbed by other processes.

The benchmark machine is shared (other jobs run tests at the same time). Two
cores oversubscribed by OpenMP threads slow a step down by far more than 2×
(threads spin at barriers waiting for a descheduled peer), so a plain median
can be dominated by other people's work. For every timed call we read, from
``/proc/stat`` and ``os.times()``, how much CPU *other* processes used while it
ran; a call is *clean* when that stays under ``CLEAN_OTHER_FRAC`` of the
machine. :func:`timed` keeps measuring until it has the wanted number of clean
calls (or runs out of its attempt/time budget) and reports the median of the
clean ones, falling back to all calls (flagged) when too few were clean.
Before each call it also waits (a bounded time) for the machine to go quiet.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

CLEAN_OTHER_FRAC = 0.10  # other processes may use at most 10 % of the machine during a clean call
NCPU = os.cpu_count() or 1
_HZ = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU-seconds all processes have spent busy since boot (all cores)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    guest = sum(vals[8:10]) if len(vals) > 9 else 0  # already counted in user/nice
    return (sum(vals) - idle - guest) / _HZ


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Probe:
    """Wall time, own CPU time and other processes' CPU share over an interval."""

    def __enter__(self) -> Probe:
        self._w0, self._o0, self._b0 = time.perf_counter(), _own_seconds(), _busy_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._w0
        own = _own_seconds() - self._o0
        busy = _busy_seconds() - self._b0
        # /proc/stat ticks are coarse (10 ms): clip to [0, 1]
        self.other_frac = min(1.0, max(0.0, (busy - own) / max(self.wall * NCPU, 1e-9)))


def other_load(window: float = 0.5) -> float:
    """Share of the machine used by other processes over the next ``window`` seconds (we sleep)."""
    with Probe() as p:
        time.sleep(window)
    return p.other_frac


def wait_for_quiet(max_wait: float = 20.0, window: float = 0.5, threshold: float = CLEAN_OTHER_FRAC) -> float:
    """Sleep until other processes use < ``threshold`` of the machine (at most ``max_wait`` s); returns the wait."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        if other_load(window) < threshold:
            break
    return time.perf_counter() - t0


@dataclass
class Timing:
    times: list[float] = field(default_factory=list)  # every timed call, seconds
    other: list[float] = field(default_factory=list)  # other processes' machine share during each call
    clean: list[bool] = field(default_factory=list)
    waited_s: float = 0.0

    @property
    def clean_times(self) -> list[float]:
        return [t for t, c in zip(self.times, self.clean) if c]

    @property
    def contended(self) -> bool:
        """True when the reported median had to include disturbed calls."""
        return len(self.clean_times) < min(2, len(self.times))

    @property
    def value(self) -> float:
        """Median over clean calls (median over all calls when fewer than two were clean)."""
        use = self.times if self.contended else self.clean_times
        return float(statistics.median(use)) if use else float("nan")

    @property
    def best(self) -> float:
        return min(self.times) if self.times else float("nan")

    def summary(self) -> dict:
        d = asdict(self)
        d.update(value=self.value, best=self.best, n_clean=len(self.clean_times), contended=self.contended)
        return d


def timed(
    fn: Callable[[], object],
    *,
    warmup: int,
    repeats: int,
    max_attempts: int | None = None,
    budget_s: float | None = None,
    quiet_wait_s: float = 20.0,
    wait_budget_s: float | None = None,
    label: str = "",
    log: Callable[[str], None] | None = None,
) -> Timing:
    """Warm up, then time ``fn`` until ``repeats`` clean calls.

    Gives up earlier when ``max_attempts`` calls were made, when the calls took
    ``budget_s``, or when waiting for quiet used up ``wait_budget_s`` (default
    2 × ``quiet_wait_s``; the machine is busy for good) and ``repeats`` calls were made.
    """
    max_attempts = max_attempts if max_attempts is not None else 2 * repeats
    wait_budget_s = 2 * quiet_wait_s if wait_budget_s is None else wait_budget_s
    for i in range(warmup):
        t0 = time.perf_counter()
        fn()
        if log:
            log(f"  {label} warm-up {i + 1}/{warmup}: {time.perf_counter() - t0:.2f} s")
    out = Timing()
    start = time.perf_counter()
    while len(out.times) < max_attempts and len(out.clean_times) < repeats:
        if budget_s is not None and out.times and time.perf_counter() - start - out.waited_s > budget_s:
            break
        busy_for_good = out.waited_s >= wait_budget_s
        if busy_for_good and len(out.times) >= repeats:
            break
        if quiet_wait_s > 0 and not busy_for_good:
            out.waited_s += wait_for_quiet(min(quiet_wait_s, wait_budget_s - out.waited_s))
        _probe_call(out, fn, label, log)
    return out


def _probe_call(out: Timing, fn: Callable[[], object], label: str, log: Callable[[str], None] | None) -> None:
    """One probed call of ``fn``: its wall time, the other processes' CPU share and clean/disturbed go to ``out``."""
    with Probe() as p:
        fn()
    out.times.append(p.wall)
    out.other.append(round(p.other_frac, 3))
    out.clean.append(p.other_frac < CLEAN_OTHER_FRAC)
    if log:
        flag = "" if out.clean[-1] else f"  (disturbed: others used {p.other_frac:.0%} of the CPUs)"
        log(f"  {label} {len(out.times)}: {p.wall:.3f} s{flag}")


def timed_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    warmup: int,
    repeats: int | dict[str, int],
    max_rounds: int | None = None,
    quiet_wait_s: float = 20.0,
    wait_budget_s: float | None = None,
    label: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Time several functions in alternation (A, B, C, A, B, C, ...), so that slow drifts of the
    machine's speed hit all of them alike and their ratios stay fair.

    ``repeats`` (per function, or one number for all) is the number of clean calls wanted; a
    function stops being called once it has them. Stops after ``max_rounds`` rounds (default
    2 × the largest ``repeats``), or once waiting for quiet used up ``wait_budget_s`` (default
    4 × ``quiet_wait_s``) and every function has been called ``repeats`` times.
    """
    want = repeats if isinstance(repeats, dict) else {name: repeats for name in fns}
    max_rounds = max_rounds if max_rounds is not None else 2 * max(want.values())
    wait_budget_s = 4 * quiet_wait_s if wait_budget_s is None else wait_budget_s
    for i in range(warmup):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if log:
                log(f"  {label}{name} warm-up {i + 1}/{warmup}: {time.perf_counter() - t0:.2f} s")
    out = {name: Timing() for name in fns}
    waited = 0.0
    for _ in range(max_rounds):
        pending = [n for n in fns if len(out[n].clean_times) < want[n]]
        if not pending:
            break
        busy_for_good = waited >= wait_budget_s
        if busy_for_good and all(len(out[n].times) >= want[n] for n in pending):
            break
        for name in pending:
            if quiet_wait_s > 0 and waited < wait_budget_s:
                w = wait_for_quiet(min(quiet_wait_s, wait_budget_s - waited))
                waited += w
                out[name].waited_s += w
            _probe_call(out[name], fns[name], f"{label}{name}", log)
    return out
