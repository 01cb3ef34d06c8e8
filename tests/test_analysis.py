"""ofa_lightning.analysis on a tiny 2-run sweep: run loading, mixture, predictions, sweep table, plots, ofa-report,
trying a checkpoint (caption / VQA / grounding / grounded QA) and the converted-checkpoint path."""

from __future__ import annotations

import io
import json
import math
import os
import shutil

import matplotlib
import matplotlib.container

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from _analysis_runs import tiny_sweep  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from ofa_lightning.analysis import plots, runs, sweep, try_model  # noqa: E402


@pytest.fixture(scope="module")
def project(tmp_path_factory, one_thread):
    return tiny_sweep(tmp_path_factory)


@pytest.fixture(scope="module")
def run0(project):
    return runs.load_run(project[1] / "0")


@pytest.fixture(scope="module")
def run1(project):
    return runs.load_run(project[1] / "1")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------------------------ one run
def test_load_run_reads_config_final_metrics_checkpoint_and_tokenizer(run0, tmp_path):
    assert run0.config["trainer"]["max_steps"] == 3 and run0.config["model"]["encoder_layers"] == 1
    assert {"test/caption/cider", "test/vqa/vqa_acc", "test/grounding/acc"} <= set(run0.final)
    assert run0.checkpoint.name == "last.ckpt" and run0.tokenizer_dir.name == "tokenizer"
    assert "max_steps: 3" in run0.config_yaml()
    with pytest.raises(FileNotFoundError, match="not a run dir"):
        runs.load_run(tmp_path)


def test_latest_run_is_the_newest(project, monkeypatch):
    root, sweep_dir = project
    assert runs.latest_run(root / "runs") == sweep_dir / "1"
    with pytest.raises(FileNotFoundError, match="no run dir"):
        runs.latest_run(root / "data")
    monkeypatch.chdir(root)  # by default: runs/ of the working directory, where ofa-train writes
    assert runs.latest_run() == sweep_dir / "1" and sweep.latest_sweep() == sweep_dir
    monkeypatch.chdir(root / "data")
    with pytest.raises(FileNotFoundError, match=str(root / "data" / "runs")):
        runs.latest_run()


def test_metrics_frame_matches_the_logged_files(run0, tmp_path):
    frame = run0.metrics()
    loss = runs.metric_curves(frame, r"^train/loss$")["train/loss"]
    assert list(loss.index) == [0, 1, 2]
    assert loss.iloc[-1] == pytest.approx(run0.final["train/loss"])
    # metrics.jsonl alone gives the same curve
    shutil.copy(run0.path / "metrics.jsonl", tmp_path / "metrics.jsonl")
    again = runs.metric_curves(runs.read_metrics(tmp_path), ["train/loss"])["train/loss"]
    assert again.tolist() == pytest.approx(loss.tolist())
    assert runs.read_metrics(tmp_path / "nothing").empty


def test_throughput_has_positive_rates(run0):
    frame = run0.metrics()
    table = runs.throughput(frame)
    assert {"samples_per_s", "tokens_per_s", "step_time_s"} <= set(table.columns)
    summary = runs.throughput_summary(frame)
    assert summary["samples_per_s"] > 0
    assert summary["samples_per_s"] == pytest.approx(float(table["samples_per_s"].median()))


def test_mixture_table_realised_is_the_counted_fraction(run0, run1):
    table = runs.mixture_table(run0)
    ratios = {name: float(entry["ratio"]) for name, entry in run0.config["mixture"].items() if entry}
    assert set(ratios) == {"caption", "vqa", "grounding"}
    assert table["configured"].to_dict() == pytest.approx({k: v / sum(ratios.values()) for k, v in ratios.items()})
    counts = runs._last_values(run0.metrics(), "data/train/mix_count/")
    assert table["examples"].to_dict() == counts
    assert table["realised"].sum() == pytest.approx(1.0)
    assert table.loc["vqa", "realised"] == pytest.approx(counts["vqa"] / sum(counts.values()))
    # the run without grounding: its configured mixture has two sources
    two = {name: float(entry["ratio"]) for name, entry in run1.config["mixture"].items() if entry}
    assert set(two) == {"caption", "vqa"}
    assert runs.mixture_table(run1)["configured"].to_dict() == pytest.approx(
        {k: v / sum(two.values()) for k, v in two.items()}
    )


def test_mixture_table_on_a_hand_made_frame():
    run = runs.Run(
        path=None,
        config={
            "mixture": {
                "a": {"task": "caption", "shards": "x", "ratio": 3},
                "b": {"task": "vqa", "shards": "y", "ratio": 1},
            }
        },
    )
    frame = pd.DataFrame(
        [
            {"step": 0, "key": "data/train/mix_count/a", "value": 1.0, "time": None},
            {"step": 5, "key": "data/train/mix_count/a", "value": 30.0, "time": None},
            {"step": 5, "key": "data/train/mix_count/b", "value": 20.0, "time": None},
            {"step": 5, "key": "data/train/mix_count/c", "value": 50.0, "time": None},  # not configured
        ]
    )
    table = runs.mixture_table(run, frame)
    assert list(table.index) == ["a", "b", "c"]
    assert table["realised"].tolist() == pytest.approx([0.3, 0.2, 0.5])
    assert table["delta"].tolist() == pytest.approx([0.3 - 0.75, 0.2 - 0.25, 0.5])


def test_judge_marks_right_and_wrong():
    assert runs.judge("red", {"red": 1.0, "blue": 0.3}, "vqa") == (1.0, True)
    assert runs.judge("blue", {"red": 1.0, "blue": 0.3}, "vqa") == (0.3, False)
    assert runs.judge([0, 0, 10, 10], [0, 0, 10, 10], "grounding") == (1.0, True)
    score, right = runs.judge([0, 0, 10, 10], [5, 0, 15, 10], "grounding")
    assert score == pytest.approx(1 / 3) and right is False
    assert runs.judge([math.nan] * 4, [0, 0, 10, 10], "grounding") == (0.0, False)
    assert runs.judge("a cat", ["a cat", "the cat"], "caption") == (None, None)


def test_predictions_are_merged_and_scored(run0):
    preds = runs.load_predictions(run0.path, "test")
    assert set(preds) == {"caption", "vqa", "grounding"}
    for source, rows in preds.items():
        records = next((run0.path / "predictions").glob(f"test_{source}_step*.jsonl")).read_text().splitlines()
        assert len(rows) == len(records)
        assert all(r["prompt"] for r in rows)  # the callback's rows gave every kept row its prompt
    vqa = preds["vqa"][0]
    assert vqa["score"] == pytest.approx(float(vqa["reference"].get(vqa["prediction"], 0.0)))
    assert vqa["correct"] == (vqa["score"] >= 0.5)
    assert all(r["correct"] is None for r in preds["caption"])
    assert runs.load_predictions(run0.path, "test", sources=["vqa"]).keys() == {"vqa"}
    assert runs.load_predictions(run0.path, "val")  # the validation run of step 3


def test_attach_images_finds_each_rows_image_in_the_shards(run0):
    from ofa_lightning.data.shards import iter_tar_samples

    preds = runs.attach_images(run0, runs.load_predictions(run0.path, "test"), limit=2)
    row = preds["grounding"][0]
    assert isinstance(row["image"], Image.Image) and "image" not in preds["grounding"][2]
    shard = runs.eval_shards(run0, "grounding", "test")
    fields = next(
        json.loads(s["json"])
        for url in shard
        for s in iter_tar_samples(url)
        if json.loads(s["json"])["id"] == row["id"]
    )
    assert row["image"].size == (fields["width"], fields["height"]) and row["reference"] == fields["box"]
    # shards gone: no image, no error
    moved = runs.Run(path=run0.path, config={**run0.config, "data": {**run0.config["data"], "shards_root": "/nope"}})
    assert "image" not in runs.attach_images(moved, runs.load_predictions(run0.path))["vqa"][0]


def test_wandb_run_reads_the_offline_run(run0, run1):
    logged = runs.wandb_run(run0.path)
    assert logged["source"] == "offline" and "test/caption/cider" in logged["keys"]
    with pytest.raises(FileNotFoundError):
        runs.wandb_run(run1.path)  # logger=none


def test_wandb_run_online_asks_the_api_for_entity_project_id(run0, tmp_path, monkeypatch):
    import wandb

    (tmp_path / "config_resolved.yaml").write_text(yaml.safe_dump({"logger": {"project": "p", "entity": "e"}}))
    (tmp_path / "wandb_id").write_text("abc123")
    asked = []

    class FakeRun:
        url, summary, config = "https://wandb.ai/e/p/runs/abc123", {"test/vqa/vqa_acc": 0.5}, {"seed": 0}

        def history(self, pandas=True):
            return pd.DataFrame({"train/loss": [1.0]})

    class FakeApi:
        def run(self, path):
            asked.append(path)
            return FakeRun()

    monkeypatch.setattr(wandb, "Api", FakeApi)
    logged = runs.wandb_run(tmp_path, online=True)
    assert asked == ["e/p/abc123"] and logged["source"] == "online" and logged["url"].endswith("abc123")
    assert logged["summary"] == {"test/vqa/vqa_acc": 0.5} and list(logged["history"].columns) == ["train/loss"]


# ------------------------------------------------------------------------------------------------ sweep
def test_find_runs_in_natural_order(tmp_path):
    for name in ("10", "2", "x/wandb/3"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "final_metrics.json").write_text("{}")
    assert [p.name for p in sweep.find_runs(tmp_path)] == ["2", "10"]
    with pytest.raises(sweep.NoRunsError, match="no runs"):
        sweep.load_sweep(tmp_path / "x")


def test_latest_sweep_finds_hydra_multirun_dirs(project, tmp_path):
    root, sweep_dir = project
    assert sweep.latest_sweep(root / "runs") == sweep_dir
    older = tmp_path / "mixture_sweep" / "mixture_sweep-20260101-000000"
    newer = tmp_path / "mixture_sweep" / "mixture_sweep-20260102-000000"
    for folder, stamp in ((older, 1_000_000), (newer, 2_000_000)):
        (folder / "0-mixture=vqa_only").mkdir(parents=True)
        (folder / "multirun.yaml").write_text("hydra: {}")
        os.utime(folder, (stamp, stamp))
    assert sweep.latest_sweep(tmp_path) == newer
    with pytest.raises(sweep.NoRunsError, match="no sweep"):
        sweep.latest_sweep(older / "0-mixture=vqa_only")


def test_labels_name_the_mixture_and_the_varying_overrides(project):
    _, sweep_dir = project
    loaded = sweep.load_sweep(sweep_dir)
    assert [r.path.name for r in loaded] == ["0", "1"]
    assert sweep.run_labels(loaded) == ["caption_vqa_grounding", "caption+vqa (logger=none, mixture.grounding=null)"]


def test_mixture_name_from_hydra_choices(run0, tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": {"mixture": "vqa_only"}}}})
    )
    assert sweep.mixture_name(runs.Run(path=tmp_path, config=run0.config)) == "vqa_only"
    assert sweep.mixture_name(runs.Run(path=tmp_path / "none", config=run0.config)) == "caption+vqa+grounding"


def test_compare_table_has_each_tasks_headline_metric(project, run0, run1):
    table = sweep.compare(project[1])
    assert list(table.columns[:7]) == [
        "mixture",
        "caption CIDEr",
        "vqa VQA acc",
        "grounding Acc@0.5",
        "caption loss",
        "grounding loss",
        "vqa loss",
    ]
    first, second = table.iloc[0], table.iloc[1]
    assert first["caption CIDEr"] == run0.final["test/caption/cider"]
    assert first["grounding loss"] == run0.final["test/grounding/loss"]
    assert second["vqa loss"] == run1.final["test/vqa/loss"]
    assert math.isnan(second["grounding Acc@0.5"])  # run 1 never trained or evaluated grounding
    assert second["run_dir"] == str(run1.path)
    val = sweep.compare(project[1], stage="val", metrics=("loss",))
    assert list(val.columns[1:4]) == ["caption loss", "grounding loss", "vqa loss"]


@pytest.fixture()
def seeded(project, tmp_path):
    """The tiny sweep plus two more seeds of job 0 (copies with ``seed=N`` added to the overrides and a different
    CIDEr): groups {0, 0-seed1, 0-seed2} and {1}."""
    sweep_dir = project[1]
    out = tmp_path / "seeded"
    skip = shutil.ignore_patterns("checkpoints", "wandb", "tokenizer")
    for name, source, seed, cider in (
        ("0", "0", None, None),
        ("1", "1", None, None),
        ("2", "0", 1, 0.5),
        ("3", "0", 2, 0.8),
    ):
        shutil.copytree(sweep_dir / source, out / name, ignore=skip)
        if seed is not None:
            overrides = yaml.safe_load((out / name / ".hydra" / "overrides.yaml").read_text())
            (out / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
            final = json.loads((out / name / "final_metrics.json").read_text())
            final["test/caption/cider"] = cider
            (out / name / "final_metrics.json").write_text(json.dumps(final))
    return out


def test_runs_differing_only_by_seed_are_summarised_with_a_t_interval(seeded, run0):
    from scipy import stats

    loaded = sweep.load_sweep(seeded)
    groups = sweep.seed_groups(loaded)
    assert [[r.path.name for r in members] for members in groups.values()] == [["0", "2", "3"], ["1"]]
    assert list(groups) == ["caption_vqa_grounding", "caption+vqa (logger=none, mixture.grounding=null)"]
    summary = sweep.summarize(loaded)
    first = summary.iloc[0]
    values = [run0.final["test/caption/cider"], 0.5, 0.8]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert first["seeds"] == 3 and first["caption CIDEr"] == pytest.approx(mean)
    assert first["caption CIDEr ±95%"] == pytest.approx(stats.t.ppf(0.975, 2) * sd / math.sqrt(3))
    assert first["vqa VQA acc ±95%"] == pytest.approx(0.0, abs=1e-12)  # the copies kept run 0's accuracy
    # n: the samples each run evaluated for the metric's source (its records of the last test evaluation)
    records = runs.prediction_files(run0.path).query("stage == 'test' and kind == 'records' and source == 'vqa'")
    assert first["vqa VQA acc n"] == len(records["path"].iloc[-1].read_text().splitlines()) > 0
    second = summary.iloc[1]
    assert second["seeds"] == 1 and math.isnan(second["caption CIDEr ±95%"])  # one seed: no interval
    assert math.isnan(second["grounding Acc@0.5"]) and math.isnan(second["grounding Acc@0.5 n"])
    shown = sweep.display_summary(summary)
    assert shown.iloc[0]["caption CIDEr"].startswith(f"{mean:.4g} ± ")
    assert shown.iloc[0]["vqa VQA acc"].endswith(f"(n={int(first['vqa VQA acc n'])})")
    assert shown.iloc[1]["grounding Acc@0.5"] == "n/a" and " ± " not in shown.iloc[1]["vqa VQA acc"]


# ------------------------------------------------------------------------------------------------ plots
def test_run_figures_are_drawn_and_saved(run0, tmp_path):
    frame = run0.metrics()
    fig = plots.plot_curves(frame, save=tmp_path / "curves.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["training loss", "validation loss", "validation metrics", "learning rate"]
    assert {line.get_label() for line in fig.axes[0].lines} == {
        "train/loss",
        "train/caption/loss",
        "train/vqa/loss",
        "train/grounding/loss",
    }
    plots.plot_throughput(frame, save=tmp_path / "throughput.png")
    fig = plots.plot_mixture(runs.mixture_table(run0, frame), save=tmp_path / "mixture.png")
    assert len(fig.axes[0].patches) == 6  # configured + realised per source
    for name in ("curves", "throughput", "mixture"):
        assert Image.open(tmp_path / f"{name}.png").size[0] > 100
    with pytest.raises(ValueError, match="curve groups"):
        plots.plot_curves(frame[frame["key"] == "epoch"])


def test_gallery_draws_boxes_and_marks(run0, tmp_path):
    preds = runs.attach_images(run0, runs.load_predictions(run0.path), limit=3)
    fig = plots.plot_gallery(preds, per_source=3, save=tmp_path / "gallery.png")
    assert (tmp_path / "gallery.png").is_file()
    grid = fig.axes
    assert len(grid) == 9  # 3 sources x 3 panels
    grounding_row = [ax for ax in grid if "grounding:" in ax.get_xlabel()]
    assert len(grounding_row) == 3 and all(ax.images for ax in grounding_row)
    for ax, row in zip(grounding_row, preds["grounding"]):
        drawn = [p for p in ax.patches if isinstance(p, Rectangle)]
        pred_ok = not any(math.isnan(v) for v in row["prediction"])
        assert len(drawn) == 1 + pred_ok  # the reference always, the prediction when it is a box
        # the verdict is under its own image (nothing above it, where the previous row's images end)
        assert ax.get_xlabel().startswith(plots.RIGHT if row["correct"] else plots.WRONG) and not ax.get_title()
    for source, row_axes in (("vqa", grid[6:9]), ("caption", grid[0:3])):
        labelled = [ax for ax in row_axes if ax.get_xlabel()]  # a source with fewer rows leaves panels empty
        assert labelled and all(f"\n{source}: " in ax.get_xlabel() for ax in labelled)  # each names its own row
    # a hand-made right answer: ✓ in green, both boxes drawn
    image = Image.new("RGB", (40, 30), "white")
    fig = plots.plot_gallery(
        {
            "grounding": [
                {
                    "id": "a",
                    "task": "grounding",
                    "prompt": "p",
                    "image": image,
                    "prediction": [1, 2, 20, 20],
                    "reference": [1, 2, 20, 21],
                    "score": 0.95,
                    "correct": True,
                }
            ]
        }
    )
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith(plots.RIGHT) and len(ax.patches) == 2
    assert matplotlib.colors.to_hex(ax.xaxis.label.get_color()) == plots.REFERENCE_COLOR


def test_sweep_figures(project, tmp_path):
    table = sweep.compare(project[1])
    fig = plots.plot_sweep(table, save=tmp_path / "sweep.png")
    assert [ax.get_title() for ax in fig.axes if ax.patches][:3] == [
        "caption CIDEr",
        "vqa VQA acc",
        "grounding Acc@0.5",
    ]
    acc = next(ax for ax in fig.axes if ax.get_title() == "grounding Acc@0.5")
    assert [t.get_text() for t in acc.texts][1] == "n/a"
    loaded = sweep.load_sweep(project[1])
    fig = plots.plot_runs_curves({lab: r.metrics() for lab, r in zip(sweep.run_labels(loaded), loaded)})
    loss = next(ax for ax in fig.axes if ax.get_title() == "train/loss")
    assert len(loss.lines) == 2
    assert (tmp_path / "sweep.png").is_file()


def test_sweep_figures_keep_one_style_per_run_and_show_intervals(seeded):
    loaded = sweep.load_sweep(seeded)
    labels = sweep.run_labels(loaded)
    groups = {g: [labels[loaded.index(r)] for r in members] for g, members in sweep.seed_groups(loaded).items()}
    styles = plots.run_styles(groups)
    assert [styles[lab]["color"] for lab in labels] == ["C0", "C1", "C0", "C0"]  # seeds share their group's colour
    assert [styles[lab]["linestyle"] for lab in labels] == ["-", "-", "--", ":"]
    frames = {lab: r.metrics() for lab, r in zip(labels, loaded)}
    fig = plots.plot_runs_curves(frames, pattern=plots.CURVE_GROUPS["validation metrics"], styles=styles)
    assert {ax.get_title() for ax in fig.axes if ax.lines} >= {"val/vqa/vqa_acc", "val/caption/cider"}
    for ax in fig.axes:  # the same run looks the same in every panel
        for line in ax.lines:
            expected = styles[line.get_label()]
            assert matplotlib.colors.to_hex(line.get_color()) == matplotlib.colors.to_hex(expected["color"])
            assert line.get_linestyle() == expected["linestyle"]
    summary = sweep.summarize(loaded)
    fig = plots.plot_sweep(summary, ["caption CIDEr"])
    bars = fig.axes[0]
    assert [matplotlib.colors.to_hex(p.get_facecolor()) for p in bars.patches] == [
        matplotlib.colors.to_hex(c) for c in ("C0", "C1")
    ]  # a group's bar has its curves' colour
    bar_container = next(c for c in bars.containers if isinstance(c, matplotlib.container.BarContainer))
    assert bar_container.errorbar is not None  # the confidence interval


# ------------------------------------------------------------------------------------------------ ofa-report
def test_report_prints_text_markdown_and_csv(project, run1, capsys, tmp_path):
    from ofa_lightning.cli.report import main

    sweep_dir = project[1]
    assert main([str(sweep_dir), "--per-run"]) == 0
    text = capsys.readouterr().out
    assert "caption_vqa_grounding" in text and "n/a" in text and "run_dir" not in text and "(2 runs)" in text
    assert main([str(sweep_dir), "--markdown", "--per-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| run | mixture | caption CIDEr")
    assert lines[1].startswith("|---|---|---:")
    assert main([str(sweep_dir), "--csv", "--per-run"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col="run")
    assert len(table) == 2 and table.iloc[1]["vqa loss"] == pytest.approx(run1.final["test/vqa/loss"])
    assert main([str(sweep_dir), "--csv", str(tmp_path / "t.csv"), "--per-run"]) == 0
    assert pd.read_csv(tmp_path / "t.csv").shape[0] == 2


def test_report_groups_seeds_by_default(seeded, capsys, monkeypatch):
    from ofa_lightning.cli.report import main

    assert main([str(seeded), "--markdown"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| group | mixture | seeds | caption CIDEr")
    first = [c.strip() for c in lines[2].split("|")]
    assert first[1:4] == ["caption_vqa_grounding", "caption_vqa_grounding", "3"]
    assert " ± " in first[4] and "(n=" in first[4]
    assert main([str(seeded), "--csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col="group")
    assert list(table["seeds"]) == [3, 1] and "caption CIDEr ±95%" in table and "vqa VQA acc n" in table
    monkeypatch.chdir(seeded.parent)  # no sweep dir given: the newest multirun dir under ./runs
    (seeded.parent / "runs").mkdir()
    shutil.copytree(seeded, seeded.parent / "runs" / "multirun-20260101-000000")
    assert main([]) == 0
    assert "multirun-20260101-000000 (2 groups of seeds)" in capsys.readouterr().out


def test_report_fails_clearly_without_runs(tmp_path, capsys):
    from ofa_lightning.cli.report import main

    assert main([str(tmp_path)]) == 2
    assert "no runs under" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ try the model
def test_region_tokens_quantise_over_the_squashed_input():
    assert try_model.region_tokens([0, 0, 64, 64], (64, 64), 64) == "<bin_0> <bin_0> <bin_63> <bin_63>"
    # a 200x100 image, the box covering its middle half: 0.25 / 0.75 of each side -> bins 250 / 749 of 1000
    assert try_model.region_tokens([50, 25, 150, 75], (200, 100), 1000) == "<bin_250> <bin_250> <bin_749> <bin_749>"
    prompt = try_model.grounded_qa_prompt("What color is it", [50, 25, 150, 75], (200, 100), 1000)
    assert prompt == " What color is it? region: <bin_250> <bin_250> <bin_749> <bin_749>"
    with pytest.raises(ValueError):
        try_model.grounded_qa_prompt(" ? ", [0, 0, 1, 1], (2, 2), 10)


@pytest.fixture(scope="module")
def model(run0):
    return try_model.load_model(run0.checkpoint)


def test_try_prompts_runs_every_instruction(model, run0, tmp_path):
    assert model.image_size == 64  # the run's input size, from its config
    image, question, expression, region = try_model.example_inputs(run0)
    assert image.size == (64, 64) and region == runs.load_predictions(run0.path)["grounding"][0]["reference"]
    results = try_model.try_prompts(model, image, question, expression, region)
    assert [r.kind for r in results] == ["caption", "vqa", "grounding", "grounded_qa", "grounded_caption"]
    grounding, gqa = results[2], results[3]
    assert len(grounding.box) == 4 and all(0 <= v <= 64 for v in grounding.box)
    bins = try_model.region_tokens(region, image, model.tokenizer.num_bins)
    assert gqa.prompt == f" {try_model.REGION_QUESTION.rstrip('?')}? region: {bins}"
    ids = model.tokenizer.encode(gqa.prompt)
    lo, hi = model.tokenizer.bin_range
    assert sum(lo <= i < hi for i in ids) == 4  # the region reaches the model as 4 location tokens
    assert gqa.text == model.generate(image, gqa.prompt, "vqa").text
    fig = try_model.plot_try(image, results, save=tmp_path / "try.png")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 5 and (tmp_path / "try.png").is_file()
    assert len(panels[3].patches) == 1 and len(panels[2].patches) == 1  # region drawn / predicted box drawn


def test_synthetic_scene_when_there_is_no_data(tmp_path):
    image, question, expression, region = try_model.example_inputs(None)
    assert image.size == (128, 128) and question and expression
    assert image.getpixel((int((region[0] + region[2]) / 2), int((region[1] + region[3]) / 2)))[0] > 200  # red


def test_converted_checkpoint_gives_the_same_outputs(model, run0, tmp_path):
    from ofa_lightning.cli.convert import main as ofa_convert

    stand_in = try_model.export_fairseq_layout(run0.checkpoint, tmp_path / "ofa_like.pt")
    assert ofa_convert([str(stand_in), str(tmp_path / "converted.pt")]) == 0
    converted = try_model.load_model(
        tmp_path / "converted.pt", tokenizer=run0.tokenizer_dir, image_size=64, prompt_types=model.prompt_types
    )  # the file does not say how it was prompted
    assert model.prompt_types == {"grounding": "prev_output"}
    image, _, expression, _ = try_model.synthetic_scene(64)
    assert converted.caption(image) == model.caption(image)
    assert converted.ground(image, expression) == pytest.approx(model.ground(image, expression))
    with pytest.raises(ValueError, match="no model"):
        import torch

        torch.save({"state_dict": {"x": torch.zeros(1)}}, tmp_path / "bad.ckpt")
        try_model.export_fairseq_layout(tmp_path / "bad.ckpt", tmp_path / "o.pt")
