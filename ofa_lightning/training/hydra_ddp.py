"""Lightning's DDP launcher under a Hydra multirun (Lightning-AI/pytorch-lightning#11617), fixed.

With ``strategy=ddp`` and several devices in one process tree, Lightning starts ranks 1..N-1 by re-running the
script with ``sys.argv`` plus ``hydra.run.dir=<run.dir>``. In a multirun, ``sys.argv`` still holds ``-m`` and the
sweep lists, and ``run.dir`` is not the job's dir: every child starts a sweep of its own (duplicate runs) and
writes elsewhere. Two more traps follow in the *next* job of the same sweep process: the launcher left
``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_*`` in ``os.environ`` (so Lightning believes the processes are created
externally and launches nobody) and the old process group is still initialised.

:func:`install` (called by ``ofa-train``) replaces the launcher's child command by a plain RUN of *this job*:
``python -m ofa_lightning.cli.train <this job's overrides> run_name=<this job's run name>
hydra.run.dir=<this job's output dir> hydra.output_subdir=null hydra.job.name=<job>_rank<r>``, so every rank of
a job writes into the job's dir and no child sweeps. :func:`job_scope` wraps one job: afterwards it destroys the
process group and restores the distributed environment variables the launcher set, so the next job starts clean.
Processes started from outside (torchrun, srun) are left alone: the launcher is not used there.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["install", "job_subprocess_cmd", "job_scope", "quote_override", "DIST_ENV"]

DIST_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RANK", "PL_GLOBAL_SEED")
# hydra overrides the child must not inherit (they describe the sweep, not the job)
_DROP_HYDRA = (
    "hydra.run.",
    "hydra.sweep.",
    "hydra/launcher",
    "hydra/sweeper",
    "hydra.launcher.",
    "hydra.sweeper.",
    "hydra.mode",
    "hydra.job.name",
    "hydra.output_subdir",
)

_state: dict[str, Any] = {"extra": []}


def job_subprocess_cmd(
    local_rank: int, module: str = "ofa_lightning.cli.train", extra: Sequence[str] = ()
) -> tuple[list[str], str]:
    """The command (and cwd) that starts rank ``local_rank`` of the current Hydra job as a plain RUN."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    command = [sys.executable, "-m", module]
    if hc.job.config_name:
        command.append(f"--config-name={hc.job.config_name}")
    # a user's config folder (--config-dir): the child composes from it too (OFA_CONFIG_PATH is inherited)
    command += [f"--config-dir={s.path}" for s in hc.runtime.config_sources if s.provider == "command-line"]
    command += [str(o) for o in hc.overrides.task]
    command += [str(o) for o in hc.overrides.hydra if not str(o).lstrip("+~").startswith(_DROP_HYDRA)]
    command += list(extra)
    command += [
        f"hydra.run.dir={quote_override(hc.runtime.output_dir)}",
        f"hydra.job.name={hc.job.name}_rank{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def quote_override(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _patched(local_rank: int) -> tuple[Sequence[str], str]:
    return job_subprocess_cmd(local_rank, extra=_state["extra"])


def install(extra_overrides: Sequence[str] = ()) -> None:
    """Make Lightning's subprocess launcher start this job's ranks (idempotent; ``extra_overrides`` such as
    ``run_name=...`` pin values the children would otherwise compute differently)."""
    _state["extra"] = list(extra_overrides)
    import lightning_fabric.strategies.launchers.subprocess_script as fabric_launcher
    import pytorch_lightning.strategies.launchers.subprocess_script as pl_launcher

    fabric_launcher._hydra_subprocess_cmd = _patched
    pl_launcher._hydra_subprocess_cmd = _patched


@contextlib.contextmanager
def job_scope() -> Iterator[None]:
    """One multirun job: on exit, tear the job's process group down and restore the distributed env variables."""
    before = {k: os.environ.get(k) for k in DIST_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if before["LOCAL_RANK"] is None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # the launcher's group: started by this job, ended with it
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
