"""Tasks (ofa_lightning.tasks): OFA's exact prompts, targets, loss masks, weights, parsing, skips, templates."""

from __future__ import annotations

import functools
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ofa_lightning.generation import GenerationConfig, Trie
from ofa_lightning.tasks import ALIASES, TASKS, BadSampleError, Example, build_task, build_task_from_config
from ofa_lightning.tasks.glue import GLUE_PROMPTS
from ofa_lightning.tasks.text import clean_caption, pre_caption, pre_question
from ofa_lightning.tasks.text_infilling import span_mask
from ofa_lightning.tokenizer import OFATokenizer

REPO = Path(__file__).resolve().parents[1]

_WORDS = (
    "yes no maybe positive negative what does the image describe which region text is are objects in "
    "of complete summary article can and imply text1 text2 have same semantics question equivalent "
    "grammatically correct sentiment or contain answer to middle part a man riding horse dog cat on "
    "grass left person sitting sat car red quick brown fox jumps over lazy runs away into forest at "
    "night how many dogs shapes there caption rugby ball japan prime minister resigned monday pm "
    "resigns unk outdoors rides"
)


@pytest.fixture(scope="module")
def tok() -> OFATokenizer:
    corpus = [_WORDS] * 30 + [f" {w}" for w in _WORDS.split()] * 20
    return OFATokenizer.train_bpe(corpus, bpe_vocab_size=1000, num_codes=64, num_bins=100)


@pytest.fixture(scope="module")
def ofa_tok() -> OFATokenizer:
    path = os.environ.get("OFA_BPE_DIR", "/work/shared/ofa_bpe")
    if not (Path(path) / "dict.txt").is_file():
        pytest.skip(f"OFA BPE files not found at {path} (set OFA_BPE_DIR)")
    return OFATokenizer.from_ofa_files(path)


def image(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8))


def build(tok, name, sample, img=None, train=True, seed=0, **options) -> Example:
    task = build_task(name, tok, **options)
    ex = task.build_example(sample, img, train, random.Random(seed))
    assert ex is not None, dict(task.skips)
    return ex


def decoded_source(tok, ex: Example) -> str:
    assert ex.source[0] == tok.bos_id and ex.source[-1] == tok.eos_id
    return tok.decode(ex.source)


def check_alignment(tok, ex: Example) -> None:
    assert len(ex.prev_output) == len(ex.target)
    assert ex.prev_output[0] == tok.bos_id
    assert ex.decoder_prompt == ex.prev_output[: len(ex.decoder_prompt)]


SAMPLES = {
    "caption": {"id": "c1", "captions": ["A man riding a horse.", "A person, on a horse!"]},
    "vqa": {"id": "v1", "question": "What is the man riding", "answer_conf": {"horse": 1.0, "pony": 0.3}},
    "grounding": {"id": "g1", "expression": "The man on the left", "box": [10, 5, 40, 40]},
    "grounded_caption": {"id": "g1", "expression": "The man on the left", "box": [10, 5, 40, 40]},
    "image_text_matching": {"id": "i1", "captions": ["a dog on grass"]},
    "qa_matching": {"id": "q1", "question": "How many dogs?", "answer_conf": {"2": 1.0}, "answer_type": "number"},
    "detection": {"id": "d1", "boxes": [[4, 4, 30, 40], [35, 10, 60, 30]], "labels": ["person", "Horse"]},
    "image_infilling": {"id": "ii", "codes": [i % 64 for i in range(256)]},
    "text_infilling": {"id": "t1", "text": "The quick brown fox jumps over the lazy dog and runs away into the forest"},
    "snli_ve": {
        "id": "s1",
        "premise": "A man rides a horse.",
        "hypothesis": "A person is outdoors.",
        "label": "entailment",
    },
    "image_classification": {"id": "ic", "class_name": "rugby ball"},
    "glue": {
        "id": "gl",
        "task": "rte",
        "sentence1": "The cat sat.",
        "sentence2": "A cat is sitting.",
        "label": "entailment",
    },
    "gigaword": {
        "id": "gw",
        "article": "Japan 's <unk> prime minister resigned on Monday",
        "summary": "Japan PM resigns",
    },
    "text_to_image": {"id": "tt", "caption": "A red car.", "codes": [i % 64 for i in range(1024)]},
}
TEXT_ONLY = {"text_infilling", "glue", "gigaword", "text_to_image"}


# ---------------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------------
def test_registry_and_unknown_name(tok):
    expected = {
        "caption",
        "vqa",
        "grounding",
        "grounded_caption",
        "image_text_matching",
        "qa_matching",
        "detection",
        "image_infilling",
        "text_infilling",
        "snli_ve",
        "image_classification",
        "glue",
        "gigaword",
        "text_to_image",
        "ocr",
        "template",
    }
    assert set(TASKS) == expected
    assert all(TASKS[n].name == n for n in TASKS)
    with pytest.raises(ValueError, match="known tasks: .*caption.*vqa"):
        build_task("captioning", tok)
    assert isinstance(build_task("refcoco", tok), TASKS["grounding"])
    assert set(ALIASES.values()) <= set(TASKS)
    with pytest.raises(ValueError, match="unknown option"):
        build_task("caption", tok, image_szie=480)


def test_every_task_builds_train_and_eval(tok):
    for name, sample in SAMPLES.items():
        task = build_task(
            name, tok, **({"image_size": 64} if name not in TEXT_ONLY | {"detection", "image_infilling"} else {})
        )
        for train in (True, False):
            ex = task.build_example(sample, None if name in TEXT_ONLY else image(), train, random.Random(1))
            assert ex is not None, (name, dict(task.skips))
            assert ex.task == name and ex.id == sample["id"]
            check_alignment(tok, ex)
            assert (ex.image is None) == (name in TEXT_ONLY)
            assert "reference" in ex.meta
        assert isinstance(task.generation_config(), GenerationConfig)
        assert task.inference in ("generate", "candidates", "last_token")


def test_conf_task_yamls_build(tok):
    files = sorted((REPO / "conf" / "task").glob("*.yaml"))
    names = {f.stem for f in files}
    assert set(TASKS) - {"template"} <= names and "shapes_count_template" in names
    for f in files:
        task = build_task_from_config(yaml.safe_load(f.read_text()), tok)
        assert isinstance(task.generation_config(), GenerationConfig)
    from omegaconf import OmegaConf

    assert build_task_from_config(OmegaConf.load(REPO / "conf/task/vqa.yaml"), tok).name == "vqa"


# ---------------------------------------------------------------------------------------------------------------
# exact prompts
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,expected",
    [
        ("caption", " what does the image describe?"),
        ("vqa", " what is the man riding?"),
        ("grounding", ' which region does the text " the man on the left " describe?'),
        ("image_text_matching", ' does the image describe " a dog on grass "?'),
        ("detection", " what are the objects in the image?"),
        ("image_infilling", " what is the image in the middle part?"),
        ("snli_ve", ' can image and text1 " a man rides a horse. " imply text2 " a person is outdoors. "?'),
        ("image_classification", " what does the image describe?"),
        ("glue", ' can text1 " the cat sat. " imply text2 " a cat is sitting. "?'),
        ("gigaword", ' what is the summary of article " japan \'s unk prime minister resigned on monday "?'),
        ("text_to_image", " what is the complete image? caption: a red car."),
    ],
)
def test_exact_prompt(tok, name, expected):
    ex = build(tok, name, SAMPLES[name], None if name in TEXT_ONLY else image(), train=False)
    assert decoded_source(tok, ex) == expected
    assert ex.source == tok.encode(expected, add_bos=True, add_eos=True)


def test_grounded_caption_prompt_two_spaces_and_bins(tok):
    ex = build(tok, "grounded_caption", SAMPLES["grounded_caption"], image(), train=False, image_size=64)
    text = decoded_source(tok, ex)
    head = "  what does the region describe? region:"
    assert text.startswith(head + " <bin_")
    bins = ex.source[-5:-1]
    lo, hi = tok.bin_range
    assert all(lo <= b < hi for b in bins)
    assert ex.source[1:-5] == tok.encode(head)
    assert tok.decode(ex.prev_output) == " the man on the left"


def test_grounded_caption_leading_space_token_ofa(ofa_tok):
    ex = build(ofa_tok, "grounded_caption", SAMPLES["grounded_caption"], image(), train=False, image_size=64)
    assert ex.source[1] == 1437  # the extra "Ġ" of OFA's two leading spaces
    assert ex.source[2] == ofa_tok.encode(" what")[0]


def test_qa_matching_and_snli_without_caption_prompts(tok):
    task = build_task("qa_matching", tok, image_size=64, positive_prob=1.0)
    ex = task.build_example(SAMPLES["qa_matching"], image(), True, random.Random(0))
    assert decoded_source(tok, ex) == ' what is the answer to question " how many dogs? ". is " 2 "?'
    assert tok.decode(ex.prev_output) == " yes"
    ex = build(tok, "snli_ve", SAMPLES["snli_ve"], image(), add_caption=False, image_size=64)
    assert decoded_source(tok, ex) == ' does the image describe " a person is outdoors. "?'


def test_glue_seven_prompts(tok):
    pair = {"sentence1": "First  Sentence", "sentence2": "Second one"}
    labels = {
        "cola": "acceptable",
        "sst2": "positive",
        "mrpc": "equivalent",
        "qqp": "duplicate",
        "mnli": "neutral",
        "rte": "not_entailment",
        "qnli": "entailment",
    }
    expected = {
        "cola": ' is the text " first sentence " grammatically correct?',
        "sst2": ' is the sentiment of text " first sentence " positive or negative?',
        "mrpc": ' does text1 " first sentence " and text2 " second one " have the same semantics?',
        "qqp": ' is question " first sentence " and question " second one " equivalent?',
        "mnli": ' can text1 " first sentence " imply text2 " second one "?',
        "rte": ' can text1 " first sentence " imply text2 " second one "?',
        "qnli": ' does " second one " contain the answer to question " first sentence "?',
    }
    words = {
        "cola": "yes",
        "sst2": "positive",
        "mrpc": "yes",
        "qqp": "yes",
        "mnli": "maybe",
        "rte": "no",
        "qnli": "yes",
    }
    assert set(GLUE_PROMPTS) == set(expected)
    task = build_task("glue", tok)
    for sub, prompt in expected.items():
        ex = task.build_example({"id": sub, "task": sub, **pair, "label": labels[sub]}, None, True, random.Random(0))
        assert decoded_source(tok, ex) == prompt
        assert ex.meta["reference"] == words[sub]
        assert tok.decode(ex.target[-1:]) == " " + words[sub]


# ---------------------------------------------------------------------------------------------------------------
# targets, loss masks, weights
# ---------------------------------------------------------------------------------------------------------------
def test_vqa_prev_output_loss_mask_and_weight(tok):
    sample = {"id": "v", "question": "what is the man riding?", "answer_conf": {"pony": 0.6, "horse": 0.6, "dog": 0.3}}
    ex = build(tok, "vqa", sample, image(), image_size=64)
    question = tok.encode(" what is the man riding?")
    answer = tok.encode(" pony")  # first of the tied maxima, as OFA's max(ref_dict, key=ref_dict.get)
    pad, eos = tok.pad_id, tok.eos_id
    assert ex.source == [tok.bos_id, *question, eos]
    assert ex.prev_output == [tok.bos_id, *question, *answer]
    assert ex.target == [pad] * len(question) + answer + [eos]
    assert ex.decoder_prompt == [tok.bos_id, *question]
    assert ex.weight == pytest.approx(0.6)
    assert ex.meta["reference"] == {"pony": 0.6, "horse": 0.6, "dog": 0.3}
    # answers from OFA's refs string and raw human answers
    ex = build(tok, "vqa", {"id": "v", "question": "q", "ofa_refs": "0.3|!+dog&&1.0|!+horse"}, image(), image_size=64)
    assert ex.target[-len(tok.encode(" horse")) - 1 :] == tok.encode(" horse") + [eos] and ex.weight == 1.0
    ex = build(tok, "vqa", {"id": "v", "question": "q", "answers": ["dog", "dog", "cat"]}, image(), image_size=64)
    assert ex.meta["answer"] == "dog" and ex.weight == pytest.approx(0.6)


def test_vqa_candidates_trie_and_pretrain_mode(tok, tmp_path):
    path = tmp_path / "answers.json"
    path.write_text('["horse", "dog", "yes"]')
    task = build_task("vqa", tok, candidates=str(path), image_size=64)
    assert task.candidates == ["horse", "dog", "yes"] and task.inference == "candidates"
    trie = task.constraint_trie()
    assert isinstance(trie, Trie)
    assert set(trie.next_tokens([])) == {tok.encode(f" {a}")[0] for a in task.candidates}
    ex = task.build_example(SAMPLES["vqa"], image(), True, random.Random(0))
    assert ex.constraint == "trie"
    assert (
        task.build_example({"id": "x", "question": "q", "answer_conf": {"cat": 1.0}}, image(), True, random.Random(0))
        is None
    )
    assert task.skips["answer not in candidates: answer_conf"] == 1
    assert task.parse_prediction(tok.encode(" horse") + [tok.eos_id], ex) == "horse"
    # pre-training rows: plain seq2seq, no "?" added
    ex = build(
        tok,
        "vqa",
        {"id": "v", "question": "what is it", "answer_conf": {"dog": 1.0}},
        image(),
        mode="pretrain",
        image_size=64,
    )
    assert tok.decode(ex.source) == " what is it"
    assert ex.prev_output == [tok.bos_id, *tok.encode(" dog")] and ex.target == tok.encode(" dog") + [tok.eos_id]


def test_snli_ve_loss_only_on_answer(tok):
    ex = build(tok, "snli_ve", SAMPLES["snli_ve"], image(), image_size=64)
    n = len(ex.source) - 2
    assert ex.target == [tok.pad_id] * n + tok.encode(" yes") + [tok.eos_id]
    assert ex.constraint == "trie"
    for label, word in (("contradiction", "no"), ("neutral", "maybe")):
        ex = build(tok, "snli_ve", dict(SAMPLES["snli_ve"], label=label), image(), image_size=64)
        assert ex.meta["reference"] == word


def test_glue_single_label_token_at_last_position(tok):
    ex = build(tok, "glue", SAMPLES["glue"])
    assert ex.prev_output == ex.source and ex.decoder_prompt == ex.source
    label = tok.encode(" yes")
    assert len(label) == 1
    assert ex.target == [tok.pad_id] * (len(ex.source) - 1) + label
    assert sum(t != tok.pad_id for t in ex.target) == 1
    task = build_task("glue", tok, subtask="sst2")
    assert task.candidates == ["positive", "negative"] and task.inference == "last_token"
    assert task.parse_prediction(tok.encode(" negative"), ex) == "negative"
    # unlabelled test rows: prediction only, no loss
    ex = build_task("glue", tok).build_example(
        {"id": "t", "task": "cola", "sentence1": "a cat"}, None, False, random.Random(0)
    )
    assert all(t == tok.pad_id for t in ex.target)


def test_glue_ofa_label_ids(ofa_tok):
    ex = build(ofa_tok, "glue", dict(SAMPLES["glue"], task="mnli", label="neutral"))
    assert ex.target[-1] == 2085  # " maybe"
    ex = build(ofa_tok, "glue", dict(SAMPLES["glue"], task="sst2", label="positive"))
    assert ex.target[-1] == 1313  # " positive"


def test_weights(tok):
    assert build(tok, "caption", SAMPLES["caption"], image(), image_size=64).weight == 1.0
    for name in ("detection", "image_infilling", "text_infilling"):
        ex = build(tok, name, SAMPLES[name], None if name in TEXT_ONLY else image())
        assert ex.weight == 2.0, name
    assert build(tok, "caption", SAMPLES["caption"], image(), image_size=64, weight=0.5).weight == 0.5
    assert build(tok, "vqa", SAMPLES["vqa"], image(), image_size=64, weight=2.0).weight == 2.0


def test_caption_targets_and_parse(tok):
    task = build_task("caption", tok, image_size=64)
    ex = task.build_example(SAMPLES["caption"], image(), False, random.Random(0))
    assert tok.decode(ex.prev_output) == " a man riding a horse"
    assert ex.target == tok.encode(" a man riding a horse") + [tok.eos_id]
    assert ex.meta["reference"] == ["a man riding a horse", "a person on a horse"]
    picked = {
        tok.decode(task.build_example(SAMPLES["caption"], image(), True, random.Random(s)).prev_output)
        for s in range(20)
    }
    assert picked == {" a man riding a horse", " a person on a horse"}
    assert task.parse_prediction(tok.encode(" a man, riding!") + [tok.eos_id, 5, 6]) == "a man riding"
    long = {"id": "l", "captions": [" ".join(["dog"] * 40)]}
    assert len(tok.decode(task.build_example(long, image(), True, random.Random(0)).prev_output).split()) == 20
    cfg = task.generation_config()
    assert (cfg.beam_size, cfg.max_len_b, cfg.no_repeat_ngram_size) == (5, 16, 3)


def test_text_cleaning_matches_ofa():
    assert pre_caption(",.A  man--riding/a <person>\n", 30) == "a man riding a person"
    assert pre_caption("a\tb", 30) == "a\tb"  # single whitespace characters other than space survive (OFA)
    assert pre_caption("one two three four", 2) == "one two"
    assert pre_question("?What  is-it", 10) == "what is it"
    assert clean_caption("A man's T-shirt, red.") == "a mans tshirt red"


# ---------------------------------------------------------------------------------------------------------------
# grounding: box -> bins -> box
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["trained", "ofa"])
def test_grounding_round_trip_with_512_squash(tok, which, request):
    t = tok if which == "trained" else request.getfixturevalue("ofa_tok")
    img = image(640, 427)
    box = [33.7, 12.2, 501.9, 420.5]
    task = build_task("grounding", t)
    ex = task.build_example({"id": "g", "expression": "the dog", "box": box}, img, False, random.Random(0))
    assert ex.image.shape == (3, 512, 512)
    assert ex.meta["w_ratio"] == pytest.approx(512 / 640) and ex.meta["h_ratio"] == pytest.approx(512 / 427)
    bins = t.ids_to_bins(ex.target[:4])
    expected_bins = [round(c * r / 512 * (t.num_bins - 1)) for c, r in zip(box, [512 / 640, 512 / 427] * 2)]
    assert bins == expected_bins
    assert ex.target[4] == t.eos_id and len(ex.target) == 5
    pred = task.parse_prediction(ex.target, ex)
    step = 512 / (t.num_bins - 1)
    for c, p, r in zip(box, pred, [512 / 640, 512 / 427] * 2):
        assert abs(c - p) <= 0.5 * step / r + 1e-6
    assert ex.meta["reference"] == box
    assert all(math.isnan(v) for v in task.parse_prediction(t.encode(" the dog"), ex))
    cfg = task.generation_config()
    assert (cfg.min_len, cfg.max_len_b, cfg.beam_size) == (4, 4, 5)


def test_grounding_prev_output_prompt_puts_the_expression_in_the_decoder(tok):
    """``prompt_type=prev_output`` (the demo's choice, OFA's VQA prompt): decoder prefix = BOS + source, loss on
    the 4 bins + EOS only; evaluation forces the prefix and parses the 4 generated bins."""
    sample = {"id": "g", "expression": "the red circle", "box": [10, 20, 30, 40]}
    plain = build(tok, "grounding", sample, image(96, 96), train=False, image_size=96, max_image_size=96)
    task = build_task("grounding", tok, image_size=96, max_image_size=96, prompt_type="prev_output")
    ex = task.build_example(sample, image(96, 96), False, random.Random(0))
    pad, eos = tok.pad_id, tok.eos_id
    bins = plain.target[:4]
    assert ex.source == plain.source
    assert ex.decoder_prompt == ex.source[:-1]
    assert ex.prev_output == ex.source[:-1] + bins
    assert ex.target == [pad] * (len(ex.source) - 2) + bins + [eos]
    assert (
        task.parse_prediction(bins + [eos], ex)
        == build_task("grounding", tok, max_image_size=96).parse_prediction(bins + [eos], plain)
        == pytest.approx([10, 20, 30, 40], abs=1.6)
    )
    cfg = task.generation_config()
    assert cfg.min_len == 0 and cfg.max_length(len(ex.source)) >= len(ex.source) - 2 + 4
    with pytest.raises(ValueError, match="prompt_type"):
        build_task("grounding", tok, prompt_type="decoder").build_example(
            sample, image(96, 96), False, random.Random(0)
        )


def test_grounding_pretrain_object_crop(tok):
    img = image(640, 480)
    ex = build(tok, "grounding", {"id": "g", "expression": "x", "box": [500, 400, 600, 470]}, img, mode="pretrain")
    assert ex.image.shape == (3, 384, 384)
    assert all(tok.bin_range[0] <= b < tok.bin_range[1] for b in ex.target[:4])


# ---------------------------------------------------------------------------------------------------------------
# detection, infilling, text-to-image, gigaword, matching
# ---------------------------------------------------------------------------------------------------------------
def test_detection_target_and_parse(tok):
    task = build_task("detection", tok)
    ex = task.build_example(SAMPLES["detection"], image(64, 48), False, random.Random(0))
    w_ratio, h_ratio = 256 / 64, 256 / 48
    assert ex.image.shape == (3, 256, 256)
    parts = []
    for box, label in zip(SAMPLES["detection"]["boxes"], ["person", "horse"]):
        scaled = [box[0] * w_ratio, box[1] * h_ratio, box[2] * w_ratio, box[3] * h_ratio]
        parts.append(" ".join(f"<bin_{round(c / 512 * (tok.num_bins - 1))}>" for c in scaled) + f" {label}")
    assert tok.decode(ex.prev_output[1:]) == " ".join(parts)
    objects = task.parse_prediction(ex.target, ex)
    assert [o["label"] for o in objects] == ["person", "horse"]
    for o, box in zip(objects, SAMPLES["detection"]["boxes"]):
        assert max(abs(a - b) for a, b in zip(o["box"], box)) < 512 / 99 / 4
    train = task.build_example(SAMPLES["detection"], image(64, 48), True, random.Random(0))
    assert train.image.shape == (3, 256, 256)


def test_image_infilling(tok):
    ex = build(tok, "image_infilling", SAMPLES["image_infilling"], image(300, 200))
    assert ex.code_mask and ex.image.shape == (3, 256, 256)
    assert torch.all(ex.image[:, 64:192, 64:192] == 0)
    assert ex.target == tok.codes_to_ids(SAMPLES["image_infilling"]["codes"]) + [tok.eos_id]
    task = build_task("image_infilling", tok)
    assert task.parse_prediction(ex.target, ex) == SAMPLES["image_infilling"]["codes"]
    assert task.build_example({"id": "x", "codes": [1, 2, 3]}, image(), True, random.Random(0)) is None
    assert task.skips["bad codes: codes"] == 1
    cfg = task.generation_config()
    assert cfg.constraint_range == tok.code_range and cfg.min_len == cfg.max_len_b == 256


def test_text_to_image(tok):
    task = build_task("text_to_image", tok)
    ex = task.build_example(SAMPLES["text_to_image"], None, True, random.Random(0))
    assert ex.image is None and ex.code_mask and ex.constraint == "codes"
    assert len(ex.target) == 1025 and ex.target[-1] == tok.eos_id
    lo, hi = tok.code_range
    assert all(lo <= t < hi for t in ex.target[:-1])
    cfg = task.generation_config()
    assert cfg.constraint_range == tok.code_range and cfg.min_len == cfg.max_len_b == 1024
    assert cfg.strategy == "sampling" and cfg.sampling_topk == 256 and cfg.beam_size == 24
    assert task.parse_prediction(ex.target, ex) == SAMPLES["text_to_image"]["codes"]
    ex = task.build_example({"id": "e", "caption": "a red car"}, None, False, random.Random(0))
    assert ex.target == [tok.eos_id]


def test_text_to_image_code_input_noise_only_in_training(tok):
    plain = build_task("text_to_image", tok).build_example(SAMPLES["text_to_image"], None, True, random.Random(0))
    assert plain.prev_output == [tok.bos_id] + plain.target[:-1]  # default 0: OFA's teacher forcing
    task = build_task("text_to_image", tok, code_input_noise=0.3)
    ex = task.build_example(SAMPLES["text_to_image"], None, True, random.Random(0))
    assert ex.target == plain.target and ex.prev_output[0] == tok.bos_id and len(ex.prev_output) == 1025
    lo, hi = tok.code_range
    changed = sum(a != b for a, b in zip(ex.prev_output, plain.prev_output))
    assert 0.2 * 1024 < changed < 0.35 * 1024  # ~30 % replaced (a replacement may draw the same code: 1/num_codes)
    assert all(lo <= t < hi for t in ex.prev_output[1:])
    assert (
        task.build_example(SAMPLES["text_to_image"], None, False, random.Random(0)).prev_output == plain.prev_output
    )  # evaluation: untouched
    with pytest.raises(ValueError, match="code_input_noise"):
        build_task("text_to_image", tok, code_input_noise=1.5)


def test_gigaword_target_noise_only_in_training(tok):
    sample = {"id": "g", "article": "japan prime minister resigned", "summary": " ".join(["japan pm resigns"] * 20)}
    task = build_task("gigaword", tok)
    clean = task.build_example(sample, None, False, random.Random(0))
    noisy = task.build_example(sample, None, True, random.Random(0))
    assert noisy.target == clean.target and noisy.source == clean.source
    assert noisy.prev_output[0] == tok.bos_id and len(noisy.prev_output) == len(clean.prev_output)
    changed = sum(a != b for a, b in zip(noisy.prev_output[1:], clean.prev_output[1:]))
    assert 0 < changed < len(clean.prev_output) - 1
    assert all(4 <= t < tok.code_offset for t in noisy.prev_output[1:])
    fracs = []
    for s in range(40):
        ex = task.build_example(sample, None, True, random.Random(s))
        fracs.append(sum(a != b for a, b in zip(ex.prev_output[1:], clean.prev_output[1:])) / (len(ex.target) - 1))
    assert 0.15 < sum(fracs) / len(fracs) < 0.25
    assert build_task("gigaword", tok, noise_ratio=0.0).build_example(sample, None, True, random.Random(0)) == clean
    cfg = task.generation_config()
    assert (cfg.beam_size, cfg.len_penalty, cfg.max_len_b, cfg.no_repeat_ngram_size) == (6, 0.7, 32, 3)


def test_image_text_matching_balanced_and_deterministic(tok):
    samples = [
        {"id": f"s{i}", "image_id": i, "captions": [f"a {w} on grass"]}
        for i, w in enumerate(["dog", "cat", "man", "horse", "car"] * 40)
    ]

    def run(seed):
        task = build_task("image_text_matching", tok, image_size=32, buffer_size=8)
        rng = random.Random(seed)
        return task, [task.build_example(s, image(32, 32), True, rng) for s in samples]

    task, a = run(0)
    _, b = run(0)
    assert [x.source for x in a] == [x.source for x in b] and [x.target for x in a] == [x.target for x in b]
    labels = [x.meta["reference"] for x in a]
    assert 0.4 < labels.count("yes") / len(labels) < 0.6
    for s, x in zip(samples, a):
        shown = tok.decode(x.source).split('"')[1].strip()
        assert (shown == s["captions"][0]) == (x.meta["reference"] == "yes")
    assert task.candidates == ["yes", "no"] and task.inference == "candidates"


def test_qa_matching_negative_answers(tok):
    task = build_task(
        "qa_matching",
        tok,
        image_size=32,
        positive_prob=0.0,
        type2ans={"other": ["red", "blue", "green"], "number": ["1", "2", "3"]},
    )
    for s in range(30):
        ex = task.build_example(
            {"id": "q", "question": "what color is the car?", "answer_conf": {"red": 1.0}, "answer_type": "other"},
            image(32, 32),
            True,
            random.Random(s),
        )
        assert ex.meta["reference"] == "no" and ex.meta["answer"] in {"blue", "green"}


# ---------------------------------------------------------------------------------------------------------------
# BART span masking (text infilling)
# ---------------------------------------------------------------------------------------------------------------
MASK = -1


def _aligns(original: list[list[int]], masked: list[int]) -> bool:
    """True when ``masked`` is ``original`` (a list of words, each a token list) with runs of >= 0 whole words
    replaced by single MASK tokens (MASK matching zero words is an insertion)."""

    words = [tuple(w) for w in original]

    @functools.cache
    def match(i: int, j: int) -> bool:  # words[i:] vs masked[j:]
        if j == len(masked):
            return i == len(words)
        if masked[j] == MASK:
            return any(match(k, j + 1) for k in range(i, len(words) + 1))
        if i < len(words):
            w = words[i]
            return tuple(masked[j : j + len(w)]) == w and match(i + 1, j + len(w))
        return False

    return match(0, 0)


def test_span_mask_fraction_alignment_and_determinism():
    rng = random.Random(0)
    total = masked_words = 0
    for _ in range(1500):
        n_words = rng.randint(10, 60)
        words = [[100 + 10 * i + k for k in range(rng.choice([1, 1, 2, 3]))] for i in range(n_words)]
        tokens = [t for w in words for t in w]
        starts = [k == 0 for w in words for k in range(len(w))]
        out = span_mask(tokens, starts, MASK, rng)
        assert _aligns(words, out)
        kept = {t for t in out if t != MASK}
        masked_words += sum(1 for w in words if w[0] not in kept)
        total += n_words
        assert all(t in kept for w in words if w[0] in kept for t in w)  # words are kept or removed whole
    frac = masked_words / total
    # 30 % of the words are drawn into spans; overlapping spans / spans cut at the end make it a bit less (BART)
    assert 0.25 < frac <= 0.31
    toks = list(range(200, 240))
    a = span_mask(toks, [True] * 40, MASK, random.Random(7))
    b = span_mask(toks, [True] * 40, MASK, random.Random(7))
    c = span_mask(toks, [True] * 40, MASK, random.Random(8))
    assert a == b and a != c and MASK in a
    assert span_mask([5, 6], [False, False], MASK, random.Random(0)) == [5, 6]  # no word start: nothing to mask


def test_text_infilling_example(tok):
    text = "The quick brown fox jumps over the lazy dog and runs away into the forest at night"
    task = build_task("text_infilling", tok)
    ex = task.build_example({"id": "t", "text": text}, None, True, random.Random(3))
    original = tok.encode(" " + text.lower())
    assert ex.target == original + [tok.eos_id] and ex.prev_output == [tok.bos_id, *original]
    src = tok.decode(ex.source)
    assert src.startswith(' what is the complete text of "') and src.endswith(' "?')
    head, tail = tok.encode(' what is the complete text of "'), tok.encode(' "?')
    assert ex.source[1 : len(head) + 1] == head and ex.source[-len(tail) - 1 : -1] == tail
    masked = ex.source[len(head) + 1 : -len(tail) - 1]
    assert masked == ex.meta["masked"] and tok.mask_id in masked
    again = task.build_example({"id": "t", "text": text}, None, True, random.Random(3))
    assert again.source == ex.source
    assert ex.image is None and ex.weight == 2.0


def test_text_infilling_ofa_prompt_tokens(ofa_tok):
    ex = build(ofa_tok, "text_infilling", {"id": "t", "text": "a b c d e f g h i j"}, seed=1)
    prefix = ofa_tok.encode(' what is the complete text of " "?')  # OFA splices the text in before its last 2
    assert ex.source[1:8] == prefix[:-2] == [99, 16, 5, 1498, 2788, 9, 22]
    assert ex.source[-3:] == prefix[-2:] + [2] == [22, 116, 2]


# ---------------------------------------------------------------------------------------------------------------
# template task
# ---------------------------------------------------------------------------------------------------------------
CAPTION_TEMPLATE = """
name: template
task_name: caption
source: "[IMAGE:image] what does the image describe?"
target: "[TEXT:captions|nopunct|words=20]"
image_size: 64
"""


def _same(a: Example, b: Example) -> None:
    assert a.source == b.source and a.prev_output == b.prev_output and a.target == b.target
    assert torch.equal(a.image, b.image)
    assert (a.id, a.task, a.weight, a.code_mask, a.constraint, a.decoder_prompt) == (
        b.id,
        b.task,
        b.weight,
        b.code_mask,
        b.constraint,
        b.decoder_prompt,
    )
    assert a.meta["reference"] == b.meta["reference"]


def test_template_reproduces_caption_task(tok):
    template = build_task_from_config(CAPTION_TEMPLATE, tok)
    caption = build_task("caption", tok, image_size=64)
    assert template.name == "caption"
    sample = {"id": "c", "captions": ["A man riding a horse.", "A person, on a horse!", "Two dogs; one cat."]}
    for train in (True, False):
        for seed in range(6):
            _same(
                template.build_example(sample, image(), train, random.Random(seed)),
                caption.build_example(sample, image(), train, random.Random(seed)),
            )
    tokens = tok.encode(" a man, riding") + [tok.eos_id]
    assert template.parse_prediction(tokens) == caption.parse_prediction(tokens) == "a man riding"


def test_template_grammar_boxes_and_errors(tok):
    grounding = build_task_from_config(
        {
            "name": "template",
            "task_name": "ref",
            "source": '[IMAGE:image] which region does the text " [TEXT:expression] " describe?',
            "target": "[BOX:box]",
            "image_size": 512,
        },
        tok,
    )
    builtin = build_task("grounding", tok)
    sample = {"id": "g", "expression": "The man", "box": [10, 5, 40, 40]}
    a = grounding.build_example(sample, image(), False, random.Random(0))
    b = builtin.build_example(sample, image(), False, random.Random(0))
    assert a.source == b.source and a.target == b.target
    assert grounding.parse_prediction(a.target, a) == builtin.parse_prediction(b.target, b)
    shapes = build_task_from_config(str(REPO / "conf/task/shapes_count_template.yaml"), tok)
    ex = shapes.build_example({"id": "s", "count": 3}, image(), True, random.Random(0))
    assert tok.decode(ex.source) == " how many shapes are in the image?" and tok.decode(ex.prev_output) == " 3"
    assert shapes.inference == "candidates" and ex.constraint == "trie" and shapes.metrics == ("accuracy",)
    text_only = build_task_from_config({"source": "summarize: [TEXT:text|raw]", "target": "[TEXT:summary]"}, tok)
    ex = text_only.build_example({"id": "t", "text": "A Cat.", "summary": "Cat"}, None, True, random.Random(0))
    assert ex.image is None and tok.decode(ex.source) == " summarize: A Cat." and text_only.group == "other"
    for bad in (
        {"source": "[TEXT]", "target": "x"},
        {"source": "[TEXT:a|bogus]", "target": "x"},
        {"source": "x", "target": "[IMAGE:image]"},
        {"source": "[BOX:b]", "target": "x"},
        {"source": "[TEXT:a", "target": "x"},
        {"source": "x"},
    ):
        with pytest.raises(ValueError):
            build_task_from_config({"name": "template", **bad}, tok)


# ---------------------------------------------------------------------------------------------------------------
# bad input: skips and strict mode
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,sample,img,key",
    [
        ("caption", {"id": "a"}, True, "missing field: captions"),
        ("caption", {"id": "a", "captions": [3]}, True, "bad type: captions"),
        ("caption", {"id": "a", "captions": ["  "]}, True, "empty text: captions"),
        ("caption", {"id": "a", "captions": ["x" * 30000]}, True, "text too long: captions"),
        ("caption", {"id": "a", "captions": ["a dog"]}, False, "missing image: image"),
        ("vqa", {"id": "a", "question": 7, "answer_conf": {"x": 1.0}}, True, "bad type: question"),
        ("vqa", {"id": "a", "question": "why"}, True, "missing field: answer_conf"),
        ("grounding", {"id": "a", "expression": "x", "box": [10, 10, 5, 20]}, True, "inverted box: box"),
        ("grounding", {"id": "a", "expression": "x", "box": [10, 10, 500, 20]}, True, "box outside image: box"),
        ("grounding", {"id": "a", "expression": "x", "box": [10, 10, 20]}, True, "bad box: box"),
        ("grounding", {"id": "a", "expression": "", "box": [1, 1, 5, 5]}, True, "empty text: expression"),
        ("detection", {"id": "a", "boxes": [[1, 1, 5, 5]], "labels": ["a", "b"]}, True, "bad value: labels"),
        ("snli_ve", {"id": "a", "premise": "p", "hypothesis": "h", "label": "unsure"}, True, "bad label: label"),
        ("glue", {"id": "a", "task": "wnli", "sentence1": "s", "label": "0"}, False, "bad value: task"),
        ("text_to_image", {"id": "a", "caption": "c", "codes": [1, 2, 999]}, False, "bad codes: codes"),
        ("gigaword", {"id": "a", "article": "x"}, False, "missing field: summary"),
        ("grounding", {"id": "a", "expression": "the <bin_5000> dog", "box": [1, 1, 5, 5]}, True, "bad text"),
        ("image_text_matching", {"id": "a", "captions": "a dog"}, False, "missing image: image"),
    ],
)
def test_bad_samples_are_counted(tok, name, sample, img, key):
    task = build_task(name, tok, **({"image_size": 32} if img and name != "detection" else {}))
    assert task.build_example(sample, image() if img else None, True, random.Random(0)) is None
    assert task.skips == {key: 1}
    assert task.build_example(sample, image() if img else None, True, random.Random(0)) is None
    assert task.skips[key] == 2


def test_strict_mode_names_sample_and_field(tok):
    task = build_task("grounding", tok, strict=True)
    with pytest.raises(BadSampleError, match=r"sample 'ref-42'.*field 'box'.*box outside image"):
        task.build_example({"id": "ref-42", "expression": "x", "box": [0, 0, 999, 10]}, image(), True, random.Random(0))
    task = build_task("vqa", tok, strict=True, image_size=32)
    with pytest.raises(BadSampleError, match=r"sample 'q-1'.*field 'question'.*missing field") as info:
        task.build_example({"id": "q-1", "answer_conf": {"a": 1.0}}, image(), True, random.Random(0))
    assert info.value.sample_id == "q-1" and info.value.field == "question"
    assert not isinstance(info.value, ValueError)  # pipelines that count ValueErrors as skips still stop
    assert build_task("caption", tok).build_example("not a dict", image(), True, random.Random(0)) is None


def test_yaml_only_task_on_real_shapes_shards(tok, tmp_path):
    """The docs' YAML-only task builds examples from the shards the shapes recipes write."""
    import json as _json

    import webdataset as wds
    from PIL import Image as _Image

    from data_recipes.shapes_pipeline import build_shapes_shards

    build_shapes_shards(tmp_path, num_images=20, seed=3, image_size=64)
    task = build_task_from_config(str(REPO / "conf/task/shapes_region_shape_template.yaml"), tok)
    sample = next(
        iter(
            wds.WebDataset(
                str(next((tmp_path / "shards" / "refcoco").glob("train-*.tar"))), shardshuffle=False, empty_check=False
            )
        )
    )
    fields = _json.loads(sample["json"])
    img = _Image.open(__import__("io").BytesIO(sample.get("png") or sample["jpg"])).convert("RGB")
    ex = task.build_example(fields, img, False, random.Random(0))
    assert ex is not None and tok.decode(ex.prev_output).strip() == fields["category"]
    source = tok.decode(ex.source)
    assert source.startswith(" what shape is in the region? region:") and source.count("<bin_") == 4


def test_template_task_from_a_file_through_build_task(tok):
    task = build_task("template", tok, config=str(REPO / "conf/task/shapes_region_shape_template.yaml"), image_size=64)
    assert task.cfg["image_size"] == 64 and task.metrics == ("accuracy",)
