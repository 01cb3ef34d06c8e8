"""The task registry: each task class declares what the kit needs (prompts per language, text fields, metrics,
decoding, row scoring) and registers itself; the places that used to list tasks by name read the registry."""

from __future__ import annotations

import ast
import random
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ofa_lightning.generation import PRESETS, GenerationConfig
from ofa_lightning.metrics import METRICS, register_metric
from ofa_lightning.metrics.classification import TextAccuracy
from ofa_lightning.tasks import (
    ALIASES,
    TASKS,
    Task,
    build_task,
    build_task_from_config,
    register_task,
    source_text_fields,
    text_fields,
)
from ofa_lightning.tasks.scoring import box_iou
from ofa_lightning.tokenizer import OFATokenizer
from ofa_lightning.training.callbacks.predictions import PredictionTables

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ofa_lightning"


@pytest.fixture(scope="module")
def tok():
    return OFATokenizer.train_bpe(
        ["what is 2 plus 3", "five", "a red circle", "what does the image describe"] * 4,
        bpe_vocab_size=300,
        num_codes=8,
        num_bins=16,
    )


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_declares_what_the_kit_reads(name):
    cls = TASKS[name]
    assert cls.name == name
    assert not cls.prompts or "en" in cls.prompts, "a task with instructions has an English one"
    assert all(isinstance(p, str) for p in cls.prompts.values())
    assert all(isinstance(f, str) for f in cls.text_fields)
    assert set(cls.metrics) <= set(METRICS), f"{name} names unregistered metrics"
    if cls.decoding is not None:
        assert PRESETS[name] == GenerationConfig(**cls.decoding), "the task's decoding is its generation preset"


def test_the_kit_tasks_text_fields_cover_their_shards():
    assert {"captions", "question", "answers", "expression", "hypothesis", "premise", "text", "labels"} <= set(
        text_fields()
    )
    assert text_fields(["caption"]) == ("captions", "caption")
    assert source_text_fields("refcoco") == ("expression",)  # an alias
    assert source_text_fields("template") == text_fields()  # declares none: every task's fields


def test_named_decoding_presets_and_aliases_come_from_the_tasks():
    assert GenerationConfig.preset("caption_huge").beam_size == 10
    assert GenerationConfig.preset("refcoco") == GenerationConfig.preset("grounding")
    assert GenerationConfig.preset("vqa_zero_shot").zero_shot
    assert ALIASES["refcoco"] == "grounding" and ALIASES["summarization"] == "gigaword"


def test_no_task_name_outside_the_tasks_in_the_wiring():
    """The modules that used to list tasks by name (decoding presets, metric wiring, tokenizer training, prediction
    tables) hold no task name as a string."""
    names = set(TASKS) | set(ALIASES)
    for rel in (
        "generation/settings.py",
        "metrics/__init__.py",
        "metrics/registry.py",
        "training/run.py",
        "training/callbacks/predictions.py",
    ):
        tree = ast.parse((PACKAGE / rel).read_text(encoding="utf-8"))
        found = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
        }
        assert not found, (rel, found)


def test_a_task_of_your_own_registers_and_is_built_from_its_config(tok, tmp_path, monkeypatch):
    (tmp_path / "my_echo_task.py").write_text(
        textwrap.dedent(
            """
            from ofa_lightning.tasks import Task, register_task

            @register_task(aliases=("parrot",))
            class EchoTask(Task):
                name = "echo"
                prompts = {"en": " repeat {text}", "xx": " xx {text}"}
                text_fields = ("text",)
                metrics = ("accuracy",)
                decoding = {"beam_size": 1, "max_len_b": 8}

                def _build(self, sample, image, train, rng):
                    text = self.text(sample, "text")
                    return self.seq2seq_example(sample, self.prompt.format(text=text), f" {text}")

                def parse_prediction(self, tokens, example=None):
                    return self.decode_text(tokens)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_echo_task", raising=False)
    try:
        # the mixture entry's options hold the composed task config: module imported, name checked
        task = build_task("echo", tok, **{"name": "echo", "module": "my_echo_task", "language": "xx"})
        assert type(task).__name__ == "EchoTask" and build_task("parrot", tok).name == "echo"
        assert task.prompt == " xx {text}" and task.instruction("hello") == " xx hello"
        example = task.build_example({"id": "1", "text": "five"}, None, True, random.Random(0))
        assert tok.decode(example.source).strip() == "xx five"
        assert task.generation_config() == GenerationConfig(beam_size=1, max_len_b=8)
        assert source_text_fields("echo") == ("text",)
        cfg = OmegaConf.create({"name": "echo", "module": "my_echo_task", "generation": {"beam_size": 3}})
        assert build_task_from_config(cfg, tok).generation_config().beam_size == 3
        with pytest.raises(ValueError, match="languages"):
            build_task("echo", tok, language="zz")
        with pytest.raises(ValueError, match="options of task 'caption'"):
            build_task("echo", tok, name="caption")
    finally:
        TASKS.pop("echo", None)
        ALIASES.pop("parrot", None)
        PRESETS.pop("echo", None)


def test_an_unimportable_task_module_says_so(tok):
    with pytest.raises(ValueError, match="not importable.*PYTHONPATH"):
        build_task("caption", tok, module="no_such_module_here")


def test_register_task_needs_a_name():
    with pytest.raises(ValueError, match="needs a class attribute 'name'"):
        register_task(type("Nameless", (Task,), {}))


def test_a_metric_of_your_own_registers():
    try:
        register_metric("my_accuracy")(TextAccuracy)
        assert METRICS["my_accuracy"] is TextAccuracy
    finally:
        METRICS.pop("my_accuracy", None)


class _Scored(Task):
    name = "scored"

    def row_score(self, prediction, reference):
        return 0.25


class _Module:
    def __init__(self, tasks):
        self.tasks = tasks

    def task_for(self, source):
        return self.tasks.get(source)


def test_prediction_tables_score_rows_with_the_source_task(tok):
    tables = PredictionTables(max_rows=4)
    records = [{"id": "a", "prediction": "x", "reference": "x"}]
    rows = tables._rows("val", "mine", records, None, 1, _Module({"mine": _Scored(tok)}))
    assert rows[0]["score"] == 0.25
    box = [0.0, 0.0, 4.0, 4.0]
    rows = tables._rows("val", "other", [{"id": "b", "prediction": box, "reference": [0, 0, 4, 2]}], None, 1, None)
    assert rows[0]["score"] == pytest.approx(box_iou(box, [0, 0, 4, 2]))
