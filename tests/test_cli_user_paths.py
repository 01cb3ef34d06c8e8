"""The ``ofa-*`` commands as a user types them: from an empty directory outside the repository, with only what a
user sets (no ``paths.*``), through the installed console scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent
# what a user's shell has: none of the kit's own knobs
HIDDEN = (
    "OFA_ROOT",
    "OFA_CONF_DIR",
    "OFA_CONFIG_PATH",
    "OFA_SMOKE",
    "OFA_DEBUG",
    "HYDRA_FULL_ERROR",
    "OFA_CLI_SET_HYDRA_FULL_ERROR",
    "OFA_BPE_DIR",
)


def user_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in HIDDEN}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def ofa(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, env=user_env(**env), capture_output=True, text=True, timeout=300)


def config_of(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return yaml.safe_load(proc.stdout)


# --- help: says what the command does, loads without torch ---------------------------------------------------------

HELP = {
    "ofa-train": ("ofa_lightning.cli.train", "ofa-train: train (and test)"),
    "ofa-eval": ("ofa_lightning.cli.eval", "ofa-eval: evaluate a checkpoint"),
    "ofa-predict": ("ofa_lightning.cli.predict", "ofa-predict: one image + an instruction"),
    "ofa-info": ("ofa_lightning.cli.info", "the model size catalogue"),
    "ofa-demo": ("ofa_lightning.cli.demo", "the kit's main job on the embedded ``shapes`` data"),
    "ofa-convert": ("ofa_lightning.cli.convert", "an OFA fairseq checkpoint"),
    "ofa-report": ("ofa_lightning.cli.report", "a sweep's runs side by side"),
    "ofa-serve": ("ofa_lightning.cli.serve", "ofa-serve: a web page and a JSON HTTP API"),
    "ofa-prepare": ("data_recipes.cli", "Convert raw public datasets into WebDataset shards"),
}

PROBE = """
import contextlib, io, sys
sys.argv = [{prog!r}, "--help"]
import {module} as cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        cli.main()
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "pytorch_lightning", "lightning_fabric", "torchvision", "timm") if m in sys.modules)
print(repr((out.getvalue(), heavy)))
"""


@pytest.mark.parametrize("prog", sorted(HELP))
def test_help_says_what_the_command_does_without_importing_torch(prog, tmp_path):
    module, words = HELP[prog]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(prog=prog, module=module)],
        cwd=tmp_path,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text, heavy = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr
    assert words in text, text[:500]
    assert heavy == [], f"{prog} --help imported {heavy}"


def test_console_script_help_runs(tmp_path):
    proc = ofa(tmp_path, "ofa-train", "--help")
    assert proc.returncode == 0 and "== Config groups" in proc.stdout and "mixture:" in proc.stdout


def test_package_import_is_light_and_OFA_loads_lazily(tmp_path):
    code = (
        "import sys, ofa_lightning; light = 'torch' not in sys.modules\n"
        "from ofa_lightning import OFA\nimport ofa_lightning.api as api\n"
        "print(light, OFA is api.OFA, 'OFA' in dir(ofa_lightning))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.split() == ["True", "True", "True"], proc.stderr[-2000:]


# --- the README's commands compose from an empty directory ---------------------------------------------------------


def test_quickstart_train_command_composes_rooted_in_the_launch_dir(tmp_path):
    cfg = config_of(
        ofa(
            tmp_path,
            "ofa-train",
            "model=base",
            "tokenizer=ofa_bpe",
            "mixture=caption_only",
            "data.task_options.image_size=480",
            "--cfg",
            "job",
            "--resolve",
        )
    )
    assert cfg["data"]["task_options"]["image_size"] == 480
    assert cfg["paths"]["root_dir"] == str(tmp_path.resolve())
    assert cfg["data"]["shards_root"] == str(tmp_path.resolve() / "data" / "shards")
    assert cfg["tokenizer"]["path"] == str(tmp_path.resolve() / "ofa_bpe")  # ./ofa_bpe unless OFA_BPE_DIR is set
    bpe = tmp_path / "elsewhere"
    cfg = config_of(ofa(tmp_path, "ofa-train", "tokenizer=ofa_bpe", "--cfg", "job", "--resolve", OFA_BPE_DIR=str(bpe)))
    assert cfg["tokenizer"]["path"] == str(bpe)


def test_eval_overrides_mapping_form_composes(tmp_path):
    cfg = config_of(
        ofa(
            tmp_path,
            "ofa-eval",
            "ckpt_path=runs/train/my_run/checkpoints/last.ckpt",
            "overrides={data.eval.max_samples: 40}",
            "--cfg",
            "job",
        )
    )
    assert cfg["overrides"] == {"data.eval.max_samples": 40}
    cfg = config_of(ofa(tmp_path, "ofa-eval", "ckpt_path=x.ckpt", "overrides.data.eval.max_samples=40", "--cfg", "job"))
    assert cfg["overrides"] == {"data": {"eval": {"max_samples": 40}}}


def test_ddp_inside_a_sweep_job_and_the_slurm_launchers_compose(tmp_path):
    cfg = config_of(
        ofa(
            tmp_path,
            "ofa-train",
            "experiment=mixture_sweep",
            "mixture=vqa_only",
            "trainer=ddp",
            "trainer.devices=2",
            "--cfg",
            "job",
        )
    )
    assert cfg["trainer"]["strategy"]["_target_"] == "pytorch_lightning.strategies.DDPStrategy"
    assert cfg["trainer"]["devices"] == 2 and cfg["task_name"] == "mixture_sweep"
    for launcher, nodes in (("slurm", 1), ("slurm_multinode", 4)):
        hydra = config_of(
            ofa(
                tmp_path,
                "ofa-train",
                f"hydra/launcher={launcher}",
                "experiment=mixture_sweep",
                "hydra.launcher.partition=gpu",
                "--cfg",
                "hydra",
            )
        )["hydra"]
        assert "submitit" in hydra["launcher"]["_target_"] and hydra["launcher"]["nodes"] == nodes
        assert hydra["launcher"]["partition"] == "gpu"
        assert hydra["sweep"]["dir"].startswith("${paths.log_dir}/${task_name}/${sweep_name}")


def test_multirun_sweep_dir_resolves_with_no_paths_given(tmp_path):
    """A real -m: Hydra resolves hydra.sweep.dir before any job runs (${hydra:...} is unset then). Both jobs fail
    fast on a missing checkpoint, with one line."""
    proc = ofa(tmp_path, "ofa-eval", "-m", "ckpt_path=first.ckpt,second.ckpt")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "first.ckpt" in proc.stderr
    assert "ofa-eval: error:" in proc.stderr.strip().splitlines()[-1]
    sweeps = list((tmp_path / "runs" / "eval").glob("multirun-*"))
    assert len(sweeps) == 1 and (sweeps[0] / "multirun.yaml").is_file()


# --- a user's own config folder ------------------------------------------------------------------------------------


def _user_configs(root: Path) -> Path:
    conf = root / "my_configs"
    (conf / "mixture").mkdir(parents=True)
    (conf / "experiment").mkdir()
    (conf / "mixture" / "my_caption_mix.yaml").write_text(
        "caption:\n  task: caption\n  shards: my_captions\n  ratio: 1.0\n"
    )
    (conf / "experiment" / "my_experiment.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /mixture: my_caption_mix\n  - override /model: tiny\n"
        "task_name: my_task\ntrainer:\n  max_steps: 7\n"
    )
    return conf


def test_user_config_dir_adds_a_mixture_and_an_experiment(tmp_path):
    conf = _user_configs(tmp_path)
    cfg = config_of(ofa(tmp_path, "ofa-train", "--config-dir", str(conf), "experiment=my_experiment", "--cfg", "job"))
    assert cfg["mixture"]["caption"]["shards"] == "my_captions"
    assert cfg["trainer"]["max_steps"] == 7 and cfg["task_name"] == "my_task"
    # the same folder through the environment variable, given as a relative path
    cfg = config_of(
        ofa(
            tmp_path,
            "ofa-train",
            "experiment=my_experiment",
            "mixture=my_caption_mix",
            "--cfg",
            "job",
            OFA_CONFIG_PATH="my_configs",
        )
    )
    assert cfg["mixture"]["caption"]["shards"] == "my_captions" and cfg["task_name"] == "my_task"
    proc = ofa(tmp_path, "ofa-train", "mixture=my_caption_mix", "--cfg", "job")
    assert proc.returncode == 2 and "my_caption_mix" in proc.stderr  # not found without the folder


# --- bad input: one line, exit status 2 ----------------------------------------------------------------------------


def test_unknown_config_key_names_the_closest_valid_ones(tmp_path):
    proc = ofa(tmp_path, "ofa-train", "trainer.max_step=3")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ofa-train: error: unknown config key 'trainer.max_step'")
    assert "trainer.max_steps" in lines[0] and "+trainer.max_step=3" in lines[0]


def test_missing_files_are_one_line(tmp_path):
    for prog, args in (
        ("ofa-predict", ["ckpt_path=missing.ckpt", "image=missing.jpg", "prompt=what?"]),
        ("ofa-eval", ["ckpt_path=missing.ckpt"]),
    ):
        proc = ofa(tmp_path, prog, *args)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and f"{prog}: error:" in proc.stderr and "missing" in proc.stderr


def test_OFA_DEBUG_shows_the_traceback(tmp_path):
    proc = ofa(tmp_path, "ofa-train", "trainer.max_step=3", OFA_DEBUG="1")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ofa-train: error:" not in proc.stderr


def test_missing_mandatory_value_and_user_errors_are_one_line():
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    from ofa_lightning.cli._hydra import user_error_message
    from ofa_lightning.errors import UserError

    with pytest.raises(MissingMandatoryValue) as info:
        OmegaConf.create({"ckpt_path": "???"}).ckpt_path  # noqa: B018
    assert user_error_message(info.value) == "missing value for 'ckpt_path': give ckpt_path=... on the command line"
    assert user_error_message(UserError("bad\nvalue")) == "bad value"
    assert user_error_message(RuntimeError("a bug")) is None  # not a user error: the traceback stays
    worker = ValueError(
        "Caught ValueError in DataLoader worker process 1.\nOriginal Traceback (most recent call "
        'last):\n  File "x.py", line 1, in f\n    g()\nValueError: images must share a size'
    )
    assert user_error_message(worker) == (
        "Caught ValueError in DataLoader worker process 1 ValueError: images must share a size"
    )


# --- OFA_SMOKE ---------------------------------------------------------------------------------------------------


def test_smoke_settings_keep_the_users_model_and_go_offline(tmp_path):
    from ofa_lightning.cli._hydra import apply_smoke
    from ofa_lightning.training.run import compose_config

    cfg = compose_config(
        [
            "model=base",
            "mixture=caption_only",
            "trainer.max_steps=500",
            "logger.mode=online",
            "data.eval.max_samples=100",
        ],
        tmp_path / "run",
        tmp_path,
    )
    apply_smoke(cfg, "train")
    assert cfg.trainer.max_steps == 2 and cfg.data.micro_batch_size == 2 and cfg.data.num_workers == 0
    assert cfg.data.eval.max_samples == 2 and cfg.checkpoint_every_n_steps == 1 and cfg.logger.mode == "offline"
    assert cfg.model.d_model == 768 and cfg.mixture.caption.shards == "coco_caption"  # the user's choices stay
    eval_cfg = compose_config(
        ["ckpt_path=x.ckpt", "++overrides={data.eval.max_samples: 40, module.ema: null}"],
        tmp_path / "eval",
        tmp_path,
        config_name="eval",
    )
    apply_smoke(eval_cfg, "eval")
    assert eval_cfg.overrides["data.eval.max_samples"] == 2 and "module.ema" in eval_cfg.overrides
