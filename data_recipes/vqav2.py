"""VQAv2 questions + annotations + COCO images -> one sample per question; plus the answer candidate list.

Inputs
  --vqa-dir   folder with v2_OpenEnded_mscoco_<subtype>_questions.json and v2_mscoco_<subtype>_annotations.json
              (subtype e.g. train2014, val2014, test2015; test has no annotations, its samples get no answers)
  --images    roots holding --image-pattern, default "{subtype}/COCO_{subtype}_{image_id:012d}.jpg"
              (the bare file name is tried under each root as well)
Splits: the subtypes found, named without their year ("train2014" -> "train", "test-dev2015" -> "test-dev").
Fields: question_id, image_id, question, answers (the raw answer strings), answer_conf (normalised answer ->
official soft score), ofa_refs ("conf|!+answer&&..." as in OFA's TSV), multiple_choice_answer, answer_type,
question_type, width, height; image under jpg/png (repeated for each question of an image, as in OFA's TSV).
Beside the shards: answers.json, the --num-candidates most frequent (normalised) multiple-choice answers of
the --candidate-splits (OFA's closed answer set has 3129).
"""

from __future__ import annotations

import argparse
import functools
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import BadSample, Candidate, PrepareError, Sample, make_key
from data_recipes.common.checks import check_image, require_field, require_int, require_text
from data_recipes.common.files import file_stamp, load_json_file, require_dir, run_cache
from data_recipes.common.image_source import ImageSource
from data_recipes.common.manifest import write_json_atomic
from data_recipes.common.splits import order_splits
from data_recipes.common.vqa_answers import format_ofa_refs, normalize_answer, soft_scores

NAME = "vqav2"
DESCRIPTION = "VQAv2 (questions + annotations JSON + COCO images) -> one sample per question; answers.json"
KEY_PREFIX = "vqa"
ANSWERS_FILE = "answers.json"
_QUESTIONS = re.compile(r"^v2_OpenEnded_mscoco_(?P<subtype>.+)_questions\.json$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vqa-dir",
        type=Path,
        required=True,
        help="folder with v2_OpenEnded_mscoco_*_questions.json and v2_mscoco_*_annotations.json",
    )
    parser.add_argument("--images", type=Path, nargs="+", required=True, help="COCO image roots (folders/.zip)")
    parser.add_argument(
        "--image-pattern",
        default="{subtype}/COCO_{subtype}_{image_id:012d}.jpg",
        help="image path under a root; fields: subtype, image_id",
    )
    parser.add_argument(
        "--num-candidates",
        type=int,
        default=3129,
        help="size of the answer candidate list written to answers.json (default 3129)",
    )
    parser.add_argument(
        "--candidate-splits",
        default="train",
        help="comma-separated splits whose multiple-choice answers rank the candidates",
    )
    parser.add_argument(
        "--num-answers", type=int, default=10, help="answers each annotated question must have (0: any number)"
    )


def _subtypes(vqa_dir: Path) -> dict[str, str]:
    """Output split name -> file subtype."""
    require_dir(vqa_dir, "the VQAv2 folder (holding v2_OpenEnded_mscoco_*_questions.json)")
    mapping: dict[str, str] = {}
    for path in sorted(vqa_dir.iterdir()):
        match = _QUESTIONS.match(path.name)
        if not match:
            continue
        subtype = match["subtype"]
        split = re.sub(r"\d{4}$", "", subtype) or subtype
        if split in mapping:
            raise PrepareError(f"{vqa_dir}: subtypes {mapping[split]} and {subtype} would both be split {split!r}")
        mapping[split] = subtype
    if not mapping:
        raise PrepareError(f"expected v2_OpenEnded_mscoco_<subtype>_questions.json files in {vqa_dir}, found none")
    return mapping


def available_splits(args: argparse.Namespace) -> list[str]:
    return order_splits(_subtypes(args.vqa_dir))


def _load(vqa_dir: str, subtype: str) -> tuple[list, dict]:
    """(questions, annotations by question_id); annotations are empty when the split has none (test)."""
    folder = Path(vqa_dir)
    return _load_cached(
        file_stamp(folder / f"v2_OpenEnded_mscoco_{subtype}_questions.json"),
        file_stamp(folder / f"v2_mscoco_{subtype}_annotations.json"),
    )


@run_cache(maxsize=4)
def _load_cached(question_stamp: tuple, annotation_stamp: tuple) -> tuple[list, dict]:
    qpath, apath = Path(question_stamp[0]), Path(annotation_stamp[0])
    subtype = _QUESTIONS.match(qpath.name)["subtype"]
    questions = load_json_file(qpath, f"VQAv2 {subtype} questions")
    if not isinstance(questions, dict) or not isinstance(questions.get("questions"), list):
        raise PrepareError(f"{qpath} has no 'questions' list")
    annotations: dict = {}
    if apath.exists():
        data = load_json_file(apath, f"VQAv2 {subtype} annotations")
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise PrepareError(f"{apath} has no 'annotations' list")
        annotations = {a.get("question_id"): a for a in data["annotations"] if isinstance(a, dict)}
    return questions["questions"], annotations


@run_cache(maxsize=64)
def _image(source: ImageSource, names: tuple[str, ...], full_decode: bool):
    return check_image(source.read(*names), full_decode=full_decode)


def _answer_fields(annotation: dict | None, num_answers: int) -> dict:
    if annotation is None:
        return {
            "answers": [],
            "answer_conf": {},
            "ofa_refs": "",
            "multiple_choice_answer": None,
            "answer_type": None,
            "question_type": None,
        }
    raw = require_field(annotation, "answers")
    if not isinstance(raw, list):
        raise BadSample("bad type: 'answers' is not a list")
    answers = [require_text(require_field(a, "answer"), "answer") for a in raw]
    if num_answers and len(answers) != num_answers:
        raise BadSample(f"bad answers: {len(answers)} answers, expected {num_answers}")
    conf = soft_scores(answers)
    if not conf:
        raise BadSample("bad answers: all answers empty after normalisation")
    mca = annotation.get("multiple_choice_answer")
    return {
        "answers": answers,
        "answer_conf": conf,
        "ofa_refs": format_ofa_refs(conf),
        "multiple_choice_answer": mca if isinstance(mca, str) else max(conf, key=conf.get),
        "answer_type": annotation.get("answer_type"),
        "question_type": annotation.get("question_type"),
    }


def _build(
    question: dict, annotation: dict | None, key: str, subtype: str, source: ImageSource, args: argparse.Namespace
) -> Sample:
    question_id = require_int(require_field(question, "question_id"), "question_id")
    image_id = require_int(require_field(question, "image_id"), "image_id")
    text = require_text(require_field(question, "question"), "question", max_chars=args.max_text_chars)
    fields = {
        "question_id": question_id,
        "image_id": image_id,
        "question": text,
        **_answer_fields(annotation, args.num_answers),
    }
    path = args.image_pattern.format(subtype=subtype, image_id=image_id)
    image = _image(source, (path, path.rsplit("/", 1)[-1]), args.full_decode)
    fields.update(width=image.width, height=image.height)
    return Sample(key, fields, image.data, image.ext)


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    subtype = _subtypes(args.vqa_dir)[split]
    questions, annotations = _load(str(args.vqa_dir), subtype)
    source = ImageSource(args.images)
    origin_file = args.vqa_dir / f"v2_OpenEnded_mscoco_{subtype}_questions.json"
    for position, question in enumerate(questions):
        qid = question.get("question_id", f"pos{position}") if isinstance(question, dict) else f"pos{position}"
        annotation = annotations.get(qid) if annotations else None
        if annotations and annotation is None:
            annotation = {}  # annotated split without this question's annotation: a skip, not an unanswered sample
        key = make_key(KEY_PREFIX, qid)
        yield Candidate(
            key,
            f"{origin_file} questions[{position}]",
            functools.partial(_build, question, annotation, key, subtype, source, args),
        )


def answer_candidates(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(most frequent normalised multiple-choice answers, splits they were counted over)."""
    subtypes = _subtypes(args.vqa_dir)
    wanted = [s.strip() for s in args.candidate_splits.split(",") if s.strip()]
    used = [s for s in wanted if s in subtypes and _load(str(args.vqa_dir), subtypes[s])[1]]
    if not used:  # e.g. only val was downloaded: fall back to every annotated split
        used = [s for s in subtypes if _load(str(args.vqa_dir), subtypes[s])[1]]
    counts: Counter = Counter()
    for split in used:
        for annotation in _load(str(args.vqa_dir), subtypes[split])[1].values():
            answer = annotation.get("multiple_choice_answer")
            if isinstance(answer, str) and normalize_answer(answer):
                counts[normalize_answer(answer)] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [answer for answer, _ in ranked[: args.num_candidates]], used


def write_extras(args: argparse.Namespace, out: Path) -> dict[str, str]:
    answers, used = answer_candidates(args)
    write_json_atomic(out / ANSWERS_FILE, answers)
    return {ANSWERS_FILE: f"{len(answers)} most frequent multiple-choice answers of split(s) {', '.join(used)}"}
