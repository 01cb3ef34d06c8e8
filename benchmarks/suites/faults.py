"""Fault soak: a demo-sized ``ofa-train`` run hit by faults at random, cycle after cycle, then checked.

    .venv/bin/python benchmarks/suites/faults.py                                 # 6 kill cycles + 8 mixed cycles
    .venv/bin/python benchmarks/suites/faults.py --kill-cycles 2 --mixed-cycles 2 --out /tmp/faults

Two runs of the same config (a 1-layer OFA on the ``shapes`` scenes at 64 px, a checkpoint every 2 steps, no
loader workers), each relaunched with ``resume=auto`` after every fault until it reaches its last step:

* **kill**: SIGKILL of the training process at a random step, ``--kill-cycles`` times. The final weights, optimiser
  moments and EMA must equal those of an uninterrupted run of the same config (the reference, run first).
* **mixed**: per cycle one fault drawn at random among SIGKILL, checkpoint corruption (1 KB of garbage in the
  middle of, or the end cut off, the newest checkpoint, after a kill), shard corruption (a training shard cut short
  or overwritten in its middle, while the run trains) and a full disk (the next checkpoint write fails with
  ``ENOSPC``: injected into the child process by this script, no file system is filled). Nothing may be lost
  silently: every corrupted checkpoint is refused by name and the run continues from the previous one, every full
  disk ends the process with "the disk is full", every damaged shard is counted as skips, and the run ends at its
  last step with finite weights.

Writes ``<out>/faults.json`` (every cycle: fault, step, outcome) and ``<out>/faults.md`` (the summary table for
docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TINY = [
    "experiment=demo",
    "logger=none",
    "data.micro_batch_size=4",
    "data.task_options.image_size=64",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "data.num_workers=0",
    "data.shuffle_buffer=8",
    "data.segment_batches=4",
    "data.eval.num_workers=0",
    "data.eval.max_samples=4",
    "trainer.limit_val_batches=1",
    "trainer.val_check_interval=1000",
    "trainer.precision=32-true",
    "test_after_fit=false",
    "module.ema={decay: 0.9}",
    "checkpoint_every_n_steps=2",
    "tokenizer.max_samples=200",
    "+tracking.step_log.enabled=true",
    "+tracking.throughput.enabled=false",
    "+tracking.predictions.enabled=false",
    "run_name=faults",
]
FAULTS = ("kill", "checkpoint", "shard", "disk_full")

# the child: ofa-train, with its checkpoint writes failing with ENOSPC from the Nth one on when asked
CHILD = """
import errno, os, sys
after = int(os.environ.get("FAULTS_ENOSPC_AFTER", "-1"))
if after >= 0:
    from ofa_lightning.training import checkpointing
    real, calls = checkpointing.torch.save, [0]
    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] > after:
            f.write(b"PK\\x03\\x04 cut by a full disk")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)
    checkpointing.torch.save = save
from ofa_lightning.cli.train import main
sys.argv = ["ofa-train", *sys.argv[1:]]
main()
"""


_LAUNCHES = [0]


def launch(root: Path, run_dir: Path, overrides: list[str], enospc_after: int = -1) -> subprocess.Popen:
    """Start the child; its output goes to a file beside the run dir (``proc.err_path``)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", FAULTS_ENOSPC_AFTER=str(enospc_after))
    command = [sys.executable, "-c", CHILD, *overrides, f"paths.root_dir={root}", f"hydra.run.dir={run_dir}"]
    _LAUNCHES[0] += 1
    err_path = run_dir.parent / f"{run_dir.name}.launch{_LAUNCHES[0]}.err"
    err_path.parent.mkdir(parents=True, exist_ok=True)
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=err, stderr=err, start_new_session=True)
    proc.err_path = err_path
    return proc


def steps_logged(run_dir: Path) -> int:
    log = run_dir / "step_log" / "steps-rank0.jsonl"
    if not log.exists():
        return 0
    steps = [0]
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError):
            continue
    return max(steps)


def wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 600) -> bool:
    """True once the run logged ``step`` (still running); False when it ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if steps_logged(run_dir) >= step:
            return True
        time.sleep(0.05)
    raise TimeoutError(f"{run_dir}: step {step} not reached in {timeout} s")


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    proc.wait(timeout=timeout)
    return proc.returncode, stderr_of(proc)


def stderr_of(proc: subprocess.Popen) -> str:
    return proc.err_path.read_text(encoding="utf-8", errors="replace")


def newest_checkpoint_step(run_dir: Path) -> int:
    from ofa_lightning.training.resume import newest_first

    ranked = newest_first(run_dir / "checkpoints")
    return ranked[0][0] or 0 if ranked else 0


def corrupt_checkpoint(run_dir: Path, rng: random.Random) -> str:
    path = run_dir / "checkpoints" / "last.ckpt"
    data = bytearray(path.read_bytes())
    if rng.random() < 0.5:
        middle = len(data) // 2
        data[middle : middle + 1024] = os.urandom(1024)
        how = "garbage in the middle"
    else:
        data = data[: len(data) * 2 // 3]
        how = "end cut off"
    path.write_bytes(bytes(data))
    return how


def corrupt_shard(root: Path, rng: random.Random) -> str:
    """Cut a training shard short, or overwrite one of its member headers with garbage (damage a reader can see;
    garbage inside an image's bytes may still decode, and no reader could tell)."""
    import tarfile

    shards = sorted((root / "data" / "shapes" / "shards").glob("*/train-*.tar"))
    shards = [s for s in shards if s.parent.name in ("coco_caption", "vqav2", "refcoco", "detection")]
    path = rng.choice(shards)
    data = bytearray(path.read_bytes())
    if rng.random() < 0.5:
        data = data[: int(len(data) * rng.uniform(0.3, 0.9)) + 7]
        how = "cut short"
    else:
        with tarfile.open(path) as tar:
            offsets = [m.offset for m in tar.getmembers()][2:]
        at = rng.choice(offsets)
        data[at : at + tarfile.BLOCKSIZE] = os.urandom(tarfile.BLOCKSIZE)
        how = "a member header overwritten"
    path.write_bytes(bytes(data))
    return f"{path.parent.name}/{path.name} {how}"


def final_state(run_dir: Path) -> dict:
    import torch

    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def compare(a: dict, b: dict) -> float:
    """The largest absolute difference over weights, optimiser moments and EMA (inf when the structure differs)."""
    import torch

    worst = 0.0
    pairs = list(zip(a["state_dict"].values(), b["state_dict"].values()))
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        pairs += [(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])) for k in sa]
    pairs += list(zip(a["ema"]["shadow"].values(), b["ema"]["shadow"].values()))
    if len(a["state_dict"]) != len(b["state_dict"]) or a["global_step"] != b["global_step"]:
        return float("inf")
    for x, y in pairs:
        worst = max(worst, float((x.float() - y.float()).abs().max()) if x.numel() else 0.0)
    return worst


def all_finite(state: dict) -> bool:
    import torch

    tensors = list(state["state_dict"].values()) + list(state["ema"]["shadow"].values())
    return all(bool(torch.isfinite(t.float()).all()) for t in tensors)


def run_cycles(
    root: Path,
    run_dir: Path,
    overrides: list[str],
    cycles: int,
    faults: tuple[str, ...],
    rng: random.Random,
    in_order: bool = False,
) -> list[dict]:
    """Relaunch with resume=auto after each of ``cycles`` faults, then once more to the end. A damaged checkpoint
    is checked in the stderr of the launch after it (refused by name, continued from the previous one)."""
    max_steps = int(next(o.split("=")[1] for o in overrides if o.startswith("trainer.max_steps=")))
    records: list[dict] = []
    pending: dict | None = None  # a damaged-checkpoint record waiting for the next launch

    def settle(err: str) -> None:
        nonlocal pending
        if pending is not None:
            pending["refused_and_fell_back"] = "is damaged" in err and "continuing from" in err
            pending = None

    for cycle in range(cycles):
        fault = faults[cycle % len(faults)] if in_order else rng.choice(faults)
        record: dict = {"cycle": cycle, "fault": fault}
        records.append(record)
        reached = steps_logged(run_dir)
        if reached >= max_steps - 2:
            record["outcome"] = "not injected: the run is at its end"
            break
        if fault == "disk_full":
            code, err = finish(launch(root, run_dir, [*overrides, "resume=auto"], enospc_after=0))
            settle(err)
            said = next((line for line in err.splitlines()[::-1] if "error:" in line), "")
            said = said[said.find("ofa-train: error:") :] if "ofa-train: error:" in said else said
            record.update(exit=code, message=said[:300], said_disk_full=code != 0 and "the disk is full" in said)
            continue
        proc = launch(root, run_dir, [*overrides, "resume=auto"])
        target = min(max_steps - 1, reached + rng.randint(1, 3))
        if fault == "shard":
            if wait_for_step(proc, run_dir, reached + 1):
                record["damage"] = corrupt_shard(root, rng)
        alive = wait_for_step(proc, run_dir, target)
        record["step"] = steps_logged(run_dir)
        if not alive:
            code, err = finish(proc)
            settle(err)
            record["outcome"] = f"ended before the fault (exit {code})"
            if code:
                record["stderr"] = err[-1000:]
                break
            continue
        kill(proc)
        settle(stderr_of(proc))
        record["checkpoint_step"] = newest_checkpoint_step(run_dir)
        if fault == "checkpoint":
            if len(list((run_dir / "checkpoints").glob("*.ckpt"))) >= 2:  # a previous one to fall back to
                record["damage"] = corrupt_checkpoint(run_dir, rng)
                pending = record
            else:
                record["outcome"] = "not injected: only one checkpoint yet (a plain kill)"
    code, err = finish(launch(root, run_dir, [*overrides, "resume=auto"]))
    settle(err)
    records.append({"cycle": "final", "exit": code, "stderr": err[-2000:] if code else ""})
    files = [*run_dir.parent.glob(f"{run_dir.name}.launch*.err"), *run_dir.glob("*.log")]
    logs = "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    for record in records:
        if record.get("fault") == "shard" and record.get("damage"):
            # seen by the run when it read past the damage (a short run may not); and the reader counts it when read
            record["skips_in_run_logs"] = "skipped sample" in logs
            record["skips_counted"] = reader_counts_damage(root, record["damage"].split(" ")[0])
    return records


def reader_counts_damage(root: Path, shard: str) -> bool:
    """Reading the damaged shard through the kit's reader gives an ``unreadable shard`` skip (not a quiet end)."""
    from ofa_lightning.data.samples import DataStats
    from ofa_lightning.data.shards import iter_json_samples

    stats = DataStats()
    for _ in iter_json_samples([str(root / "data" / "shapes" / "shards" / shard)], stats):
        pass
    return stats.skipped.get("unreadable shard", 0) > 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kill-cycles", type=int, default=6)
    parser.add_argument("--mixed-cycles", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24, help="trainer.max_steps of each run")
    parser.add_argument("--num-images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument("--faults", default=",".join(FAULTS), help="the mixed run's fault kinds (comma list)")
    parser.add_argument("--in-order", action="store_true", help="the mixed faults in the order given, not drawn")
    parser.add_argument("--root", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "faults")
    parser.add_argument("overrides", nargs="*", help="more ofa-train overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import shutil
    import tempfile

    from data_recipes.shapes_pipeline import build_shapes_shards

    args = parse_args(argv)
    rng = random.Random(args.seed)
    work = args.root or Path(tempfile.mkdtemp(prefix="ofa-faults-"))
    started = time.time()
    overrides = [*TINY, f"trainer.max_steps={args.steps}", *args.overrides]
    clean = work / "clean"
    if not (clean / "data" / "shapes").exists():
        build_shapes_shards(clean / "data" / "shapes", num_images=args.num_images, seed=1, image_size=64)
    # the reference: uninterrupted
    reference = work / "runs" / "reference"
    code, err = finish(launch(clean, reference, overrides))
    if code != 0:
        raise SystemExit(f"the reference run failed:\n{err[-3000:]}")
    result: dict = {"steps": args.steps, "seed": args.seed}
    # kill-only: must end where the reference ended
    killed = work / "runs" / "killed"
    kill_records = run_cycles(clean, killed, overrides, args.kill_cycles, ("kill",), rng)
    final_kill = kill_records[-1]
    difference = compare(final_state(reference), final_state(killed)) if final_kill["exit"] == 0 else float("inf")
    result["kill"] = {"cycles": kill_records, "max_abs_difference": difference, "equal": difference <= 1e-5}
    # mixed faults on a copy of the data (shards get damaged)
    mixed_root = work / "mixed"
    shutil.copytree(clean / "data", mixed_root / "data", dirs_exist_ok=True)
    mixed = work / "runs" / "mixed"
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = set(kinds) - set(FAULTS)
    if unknown or not kinds:
        raise SystemExit(f"--faults: unknown kinds {sorted(unknown)}; known: {', '.join(FAULTS)}")
    mixed_records = run_cycles(mixed_root, mixed, overrides, args.mixed_cycles, kinds, rng, args.in_order)
    final_mixed = mixed_records[-1]
    state = final_state(mixed) if final_mixed["exit"] == 0 else None
    result["mixed"] = {
        "cycles": mixed_records,
        "finished": state is not None and state["global_step"] == args.steps,
        "finite": state is not None and all_finite(state),
    }
    result["seconds"] = round(time.time() - started, 1)
    result["verdict"] = verdict(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "faults.md").write_text(summary(result))
    print(summary(result))
    return result


def verdict(result: dict) -> dict[str, bool]:
    mixed = [r for r in result["mixed"]["cycles"] if r.get("cycle") != "final"]
    return {
        "kill cycles end equal to the uninterrupted run": bool(result["kill"]["equal"]),
        "mixed run finished with finite weights": bool(result["mixed"]["finished"] and result["mixed"]["finite"]),
        "every full disk said so": all(r.get("said_disk_full") for r in mixed if r["fault"] == "disk_full"),
        "every damaged shard counted as skips when read": all(
            r.get("skips_counted") for r in mixed if r["fault"] == "shard" and r.get("damage")
        ),
        "every damaged checkpoint refused, run continued from the previous one": all(
            r.get("refused_and_fell_back") for r in mixed if r["fault"] == "checkpoint" and r.get("damage")
        ),
    }


def summary(result: dict) -> str:
    mixed = [r for r in result["mixed"]["cycles"] if r.get("cycle") != "final"]
    counts = {f: sum(r["fault"] == f for r in mixed) for f in FAULTS}
    kills = len([r for r in result["kill"]["cycles"] if r.get("cycle") != "final"])
    lines = [
        "| run | cycles | faults | outcome |",
        "|---|---|---|---|",
        f"| kill-only | {kills} | SIGKILL ×{kills} | final weights, moments and EMA equal the uninterrupted run's "
        f"(largest difference {result['kill']['max_abs_difference']:.1e}): "
        f"{'yes' if result['kill']['equal'] else 'NO'} |",
        f"| mixed | {len(mixed)} | "
        + ", ".join(f"{k} ×{v}" for k, v in counts.items() if v)
        + " | "
        + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in result["verdict"].items() if "kill cycles" not in k)
        + " |",
    ]
    return (
        "\n".join(lines) + f"\n\n{result['steps']} steps per run, fault seed {result['seed']}, {result['seconds']} s.\n"
    )


if __name__ == "__main__":
    main()
