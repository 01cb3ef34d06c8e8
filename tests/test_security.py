"""Security: checkpoints load with weights_only (resume included), archives with absolute / `..` / link members are
refused, file names from annotations cannot climb out of a root, shard manifests cannot smuggle a shell command, and
no shell command is built from data. (The restricted RefCOCO unpickler: test_recipes.py
``test_restricted_unpickler_refuses_code_and_accepts_plain_data`` / ``test_refcoco_refuses_a_malicious_refs_pickle``;
zip members: ``test_images_from_zip_and_unsafe_archive_members``; fairseq allow-list: test_convert.py
``test_unsafe_pickles_are_refused_unless_trusted``.)"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from data_recipes.common.errors import BadSample, PrepareError
from data_recipes.common.files import safe_relative_path
from data_recipes.common.image_source import ImageSource
from ofa_lightning.data.shards import ShardReadError, iter_tar_samples, resolve_shards

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_resume_refuses_a_checkpoint_that_runs_code(tmp_path):
    """train() resumes with Trainer.fit(weights_only=True) and AtomicCheckpointIO: a planted last.ckpt that would run
    a command is refused and the command never runs."""
    from ofa_lightning.training.checkpointing import AtomicCheckpointIO

    marker = tmp_path / "pwned"
    evil = tmp_path / "last.ckpt"
    torch.save(
        {"state_dict": _Tiny().state_dict(), "global_step": 1, "epoch": 0, "loops": {}, "x": _Payload(marker)}, evil
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
    )
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|global"):
        trainer.fit(
            _Tiny(),
            torch.utils.data.DataLoader(torch.randn(4, 2), batch_size=2),
            ckpt_path=str(evil),
            weights_only=True,
        )
    assert not marker.exists()
    run_py = (REPO / "ofa_lightning" / "training" / "run.py").read_text()
    assert "weights_only=True)" in run_py.split("trainer.fit(", 1)[1].split("\n", 1)[0]


def _tar_with(path: Path, name: str, link: str | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("ok/a.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"jpg"))
        info = tarfile.TarInfo(name)
        if link is not None:
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
        else:
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    return path


@pytest.mark.parametrize(
    "name,link", [("/etc/evil.jpg", None), ("ok/../../evil.jpg", None), ("ok/link.jpg", "/etc/passwd")]
)
def test_tar_archives_with_absolute_dotdot_or_link_members_are_refused(tmp_path, name, link):
    archive = _tar_with(tmp_path / "images.tar", name, link)
    with pytest.raises(PrepareError, match="unsafe member|link member"):
        ImageSource([archive])
    assert ImageSource([_tar_with(tmp_path / "fine.tar", "ok/b.jpg")]).read("ok/b.jpg") == b"bad"


@pytest.mark.parametrize("name", ["/etc/passwd", "../secrets.jpg", "a/../../b.jpg", "C:/windows/x.jpg", "..\\x.jpg"])
def test_annotation_file_names_cannot_leave_the_root(name):
    with pytest.raises(BadSample, match="unsafe path"):
        safe_relative_path(name, "image")
    assert safe_relative_path("train2014/./x.jpg") == "train2014/x.jpg"


def test_a_manifest_cannot_smuggle_a_pipe_command(tmp_path):
    """Shard names inside a manifest are joined to the folder: 'pipe:...' there is a (missing) file, never a
    command. Only a shard spec the user writes that *starts* with 'pipe:' runs a shell command."""
    marker = tmp_path / "pwned"
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "manifest.json").write_text(
        json.dumps({"splits": {"train": {"shards": [{"file": f"pipe:touch {marker}"}]}}})
    )
    urls = resolve_shards(str(folder), "train")
    assert len(urls) == 1 and not urls[0].startswith("pipe:")
    with pytest.raises(ShardReadError):
        list(iter_tar_samples(urls[0]))
    assert not marker.exists()
    from ofa_lightning.data import OFADataModule

    dm = OFADataModule({"a": {"task": "t", "shards": "x"}}, shards_root=str(tmp_path))
    assert dm._rooted("sub/pipe:touch x") == str(tmp_path / "sub/pipe:touch x")  # relative: a path, not a pipe
    assert dm._rooted("pipe:cat /data/a.tar") == "pipe:cat /data/a.tar"  # written by the user: kept


ALLOWED_SHELL = {
    # the one place a shell runs: a shard spec the user wrote as `pipe:<command>` (webdataset convention)
    ("ofa_lightning/data/shards.py", "subprocess.Popen(command, shell=True"),
    # the fault soak starts ofa-train as a child: fixed argv list (python -c <its own code>, overrides), no shell
    ("benchmarks/suites/faults.py", "proc = subprocess.Popen(command, cwd=REPO, env=env"),
    # the benchmark re-runs itself: fixed argv list, no shell
    ("benchmarks/suites/run.py", "subprocess.Popen(cmd, stdout"),
    # the scaling table runs each point in a fresh child of itself: fixed argv list (the spec is JSON), no shell
    ("benchmarks/suites/scaling.py", "subprocess.run(cmd, capture_output=True"),
    # the benchmark looks up tcmalloc with its own fixed script and the repository's cache folder: no shell
    ("benchmarks/harness/common.py", "proc = subprocess.run("),
    # the serving load test starts ofa-serve as a child: fixed argv list (checkpoint path and port as key=value), no shell
    ("benchmarks/suites/serve_load.py", "subprocess.Popen(command, stdout=subprocess.DEVNULL"),
    # LoRA vs full fine-tuning measures each (size, mode) in a fresh child of itself: fixed argv list, no shell
    ("benchmarks/suites/lora.py", "done = subprocess.run(cmd, capture_output=True"),
}


def test_no_shell_command_is_built_from_data():
    """Every subprocess / os.system / shell=True in the package, the recipes and the benchmarks is on the list above
    (reviewed: none interpolates data into a command line)."""
    pattern = re.compile(r"os\.system\(|os\.popen\(|subprocess\.\w+\(|shell\s*=\s*True|pty\.spawn|commands\.getoutput")
    found = set()
    for folder in ("ofa_lightning", "data_recipes", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            for line in path.read_text(encoding="utf-8").splitlines():
                code = line.split("#", 1)[0]
                if pattern.search(code):
                    rel = path.relative_to(REPO).as_posix()
                    found.add((rel, code.strip()))
    unexpected = [(f, c) for f, c in found if not any(f == af and ac in c for af, ac in ALLOWED_SHELL)]
    assert not unexpected, unexpected
