"""ofa-train → checkpoint → ofa-eval → ofa-predict on tiny shapes data, and every config composes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from data_recipes.shapes_pipeline import build_shapes_shards
from ofa_lightning.paths import CONF_DIR
from ofa_lightning.training.run import compose_config, train

TINY = [
    "debug=fdr",
    "data.micro_batch_size=4",
    "data.task_options.image_size=64",
    "logger=none",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    build_shapes_shards(root / "data" / "shapes", num_images=40, seed=1, image_size=64)
    run_dir = root / "runs" / "demo" / "t"
    cfg = compose_config(["experiment=demo", *TINY], run_dir, root)
    metrics = train(cfg)
    return root, run_dir, metrics


def test_train_writes_checkpoint_metrics_and_config(trained_run):
    _, run_dir, metrics = trained_run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    saved = OmegaConf.load(run_dir / "config_resolved.yaml")
    assert saved.trainer.max_steps == 3 and saved.model.encoder_layers == 1
    assert {"test/caption/cider", "test/vqa/vqa_acc", "test/grounding/acc", "train/loss"} <= set(metrics)
    assert json.loads((run_dir / "final_metrics.json").read_text())["train/loss"] == metrics["train/loss"]


def test_eval_reproduces_the_runs_test_metrics(trained_run, tmp_path):
    from ofa_lightning.cli.eval import run

    _, run_dir, metrics = trained_run
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[
                f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                f"paths.output_dir={tmp_path}",
                f"paths.root_dir={tmp_path}",
            ],
        )
    out = run(cfg)
    assert out["test/caption/loss"] == pytest.approx(metrics["test/caption/loss"], rel=1e-4)
    assert (tmp_path / "metrics.json").is_file() and list((tmp_path / "predictions").glob("*.jsonl"))


def _eval_cfg(run_dir: Path, out: Path, *extra: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(
            "eval",
            overrides=[
                f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                f"paths.output_dir={out}",
                f"paths.root_dir={out}",
                *extra,
            ],
        )


@pytest.mark.skipif(shutil.which("java") is None, reason="official mode needs Java (pycocoevalcap's PTB + METEOR)")
def test_eval_official_mode_scores_the_saved_caption_predictions(trained_run, tmp_path):
    from ofa_lightning.cli.eval import run

    _, run_dir, _ = trained_run
    out = run(_eval_cfg(run_dir, tmp_path, "official=true"))
    official = {k: v for k, v in out.items() if k.startswith("official/")}
    names = {k.rsplit("/", 1)[1] for k in official}
    assert {"bleu_4", "meteor", "rouge_l", "cider"} <= names
    assert all(0.0 <= v <= 10.0 for v in official.values())
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert {k: saved[k] for k in official} == official


def test_eval_official_mode_without_java_says_so(trained_run, tmp_path, monkeypatch):
    from ofa_lightning.cli.eval import run
    from ofa_lightning.metrics import official as official_mod

    monkeypatch.setattr(official_mod.shutil, "which", lambda name: None)
    _, run_dir, _ = trained_run
    with pytest.raises(RuntimeError, match="(?i)java"):
        run(_eval_cfg(run_dir, tmp_path, "official=true"))


def test_eval_names_a_missing_checkpoint(tmp_path):
    from ofa_lightning.cli.eval import run

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[
                f"ckpt_path={tmp_path / 'nope.ckpt'}",
                f"paths.output_dir={tmp_path}",
                f"paths.root_dir={tmp_path}",
            ],
        )
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        run(cfg)


def test_predict_text_and_box(trained_run, tmp_path):
    from PIL import Image

    from ofa_lightning.cli.predict import run

    _, run_dir, _ = trained_run
    image = tmp_path / "in.png"
    Image.new("RGB", (80, 60), "green").save(image)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        common = [
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"image={image}",
            "image_size=64",
            f"paths.output_dir={tmp_path}",
            f"paths.root_dir={tmp_path}",
        ]
        caption = compose("predict", overrides=[*common, "prompt=what does the image describe?"])
        ground = compose(
            "predict",
            overrides=[*common, "decoding=grounding", "prompt='which region does the text \" the circle \" describe?'"],
        )
    assert isinstance(run(caption)["text"], str)
    result = run(ground)
    assert len(result["box"]) == 4 and Path(result["image_with_box"]).is_file()


def test_python_api_grounds_with_the_evaluation_decoder_not_code_mode(trained_run):
    """The façade decodes boxes as evaluation does: the grounding task's own decoding settings in the text-mode
    decoder (it once used image-code mode), with the expression as forced decoder prefix when the run trained
    grounding with ``prompt_type=prev_output`` (the checkpoint's model card says so; the demo does)."""
    import torch
    from PIL import Image

    from ofa_lightning.api import OFA, PROMPTS
    from ofa_lightning.generation import generate

    _, run_dir, _ = trained_run
    demo = OFA.load(run_dir / "checkpoints" / "last.ckpt", image_size=64)
    assert demo.prompt_types == {"grounding": "prev_output"}
    plain = OFA(demo.model, demo.tokenizer, image_size=64)  # a run with OFA's default prompt_type none
    assert plain.task("grounding").cfg["prompt_type"] == "none"
    image = Image.new("RGB", (64, 64), "grey")
    prompt = PROMPTS["grounding"].format(text="the red circle")
    source = torch.tensor([demo.tokenizer.encode(prompt, add_bos=True, add_eos=True)])
    batch = {
        "input_ids": source,
        "patch_images": demo.prepare_image(image, 64)[0][None],
        "patch_masks": torch.tensor([True]),
    }
    eos = demo.tokenizer.eos_id
    for ofa, prefix in ((plain, None), (demo, source[:, 1:-1])):
        config = ofa.task("grounding").generation_config()
        got = ofa.generate(image, prompt, "grounding")
        text_mode = generate(ofa.model, batch, config, prefix_tokens=prefix)[0][0]
        code_mode = generate(ofa.model, batch, config, prefix_tokens=prefix, code_masks=torch.tensor([True]))[0][0]
        assert got.tokens == [t for t in text_mode.tokens.tolist() if t != eos]
        assert float(text_mode.score) != pytest.approx(float(code_mode.score), abs=1e-5)  # the modes differ


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
GROUPS = {
    g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml"))
    for g in ("model", "tokenizer", "mixture", "data", "trainer", "logger", "module", "debug")
}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}"], tmp_path, tmp_path)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.trainer.max_steps > 0


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], tmp_path, tmp_path)
    OmegaConf.to_container(cfg, resolve=True)


def test_unknown_experiment_lists_choices(tmp_path):
    with pytest.raises(Exception, match="demo"):
        compose_config(["experiment=nope"], tmp_path, tmp_path)
