"""Shared test set-up: quiet W&B, offline everything, tiny configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("OFA_BPE_DIR", str(REPO.parent / "shared" / "ofa_bpe"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
