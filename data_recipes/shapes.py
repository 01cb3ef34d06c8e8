"""`shapes`: the kit's embedded dataset, a generator writing coloured-shape scenes in the OFFICIAL raw formats.

Everything is deterministic by seed (same files, byte for byte). Images are split 80/10/10 into train/val/test
by image, so no image appears in two splits, and every source format below is written for the same images,
so the real recipes convert them exactly as they convert the public datasets:

  images/<split>/COCO_<split>_<image_id:012d>.jpg   (COCO naming, so VQA's default image pattern applies)
  dataset_coco.json                                 Karpathy captions: 5 paraphrased refs per image
  vqa/v2_OpenEnded_mscoco_<split>_questions.json    VQAv2 questions (colour, shape, count, yes/no, position)
  vqa/v2_mscoco_<split>_annotations.json            ... with 10 answers each, mostly agreeing
  refcoco/refs(unc).p + refcoco/instances.json      referring expressions (only unambiguous ones) -> boxes
  snli_ve/snli_ve_<train|dev|test>.jsonl            premise = a caption; one hypothesis per label
  detection/instances_<split>.json                  COCO detection, category = shape (plus a "color" field), named in the text's language
  corpus.txt                                        sentences about train scenes, paragraphs split by blank lines
  scenes.json                                       ground truth: every shape's colour, RGB, box and area

Usage: ofa-prepare shapes --out RAW_DIR --num-images 1000 --seed 0 --image-size 128
       [--counts 1 2 2 3 3 4] [--shape-scale 0.18 0.34]   (shapes per scene, drawn from the list; slot side range
                                                          as fractions of the image side; these are the defaults)
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import random
from pathlib import Path
from typing import Any

from data_recipes import shapes_language, shapes_language_zh
from data_recipes.common.options import positive_int
from data_recipes.shapes_language import annotator_answers
from data_recipes.shapes_scene import COLOURS, DEFAULT_COUNTS, DEFAULT_SHAPE_SCALE, SHAPES, draw_scene

NAME = "shapes"
DESCRIPTION = "generate the synthetic shapes dataset in official raw formats (COCO, VQAv2, RefCOCO, SNLI-VE...)"
KIND = "generator"
SPLITS = ("train", "val", "test")
SNLI_SPLIT_NAMES = {"train": "train", "val": "dev", "test": "test"}
CATEGORY_IDS = {shape: i + 1 for i, shape in enumerate(SHAPES)}
JPEG_QUALITY = 95
#: the language of the text (captions, questions, expressions, hypotheses, corpus): module per language
LANGUAGES = {"en": shapes_language, "zh": shapes_language_zh}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for the raw files")
    parser.add_argument("--num-images", type=positive_int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128, help="square image side in pixels (>= 48)")
    parser.add_argument("--questions-per-image", type=positive_int, default=4)
    parser.add_argument(
        "--counts",
        type=positive_int,
        nargs="+",
        default=list(DEFAULT_COUNTS),
        help="shapes per scene, drawn uniformly from this list (default: 1 2 2 3 3 4)",
    )
    parser.add_argument(
        "--shape-scale",
        type=float,
        nargs=2,
        default=list(DEFAULT_SHAPE_SCALE),
        metavar=("MIN", "MAX"),
        help="shape size range as fractions of the image side",
    )
    parser.add_argument("--language", choices=sorted(LANGUAGES), default="en", help="language of all the text")


def split_ids(num_images: int, seed: int) -> dict[int, str]:
    """image_id (1..N) -> split, 80/10/10 by a seeded shuffle (val and test get >= 1 image once N >= 3)."""
    ids = list(range(1, num_images + 1))
    random.Random(f"shapes-split-{seed}").shuffle(ids)
    n_held = max(1, round(num_images * 0.1)) if num_images >= 3 else 0
    assignment = {i: "val" for i in ids[:n_held]}
    assignment.update({i: "test" for i in ids[n_held : 2 * n_held]})
    assignment.update({i: "train" for i in ids[2 * n_held :]})
    return assignment


def file_name(split: str, image_id: int) -> str:
    return f"COCO_{split}_{image_id:012d}.jpg"


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=None, sort_keys=True) + "\n", encoding="utf-8")


def generate_shapes(
    out: Path,
    num_images: int = 1000,
    seed: int = 0,
    image_size: int = 128,
    questions_per_image: int = 4,
    counts: tuple[int, ...] = DEFAULT_COUNTS,
    shape_scale: tuple[float, float] = DEFAULT_SHAPE_SCALE,
    language: str = "en",
) -> dict[str, Any]:
    """Writes the raw files (see the module docstring) into `out`; returns counts per split.

    ``counts`` and ``shape_scale`` go to :func:`~data_recipes.shapes_scene.draw_scene` (shapes per scene; slot
    side range as fractions of ``image_size``)."""
    if image_size < 48:
        raise ValueError("image_size must be at least 48 pixels")
    counts = tuple(int(c) for c in counts)
    if not counts or min(counts) < 1 or max(counts) > 4:  # the language's number words stop at five (a count + 1)
        raise ValueError(f"counts must be shape counts between 1 and 4, got {list(counts)}")
    low, high = (float(x) for x in shape_scale)
    if not 0 < low <= high <= 0.8:
        raise ValueError(f"shape_scale must be 0 < min <= max <= 0.8 (fractions of the image side), got {[low, high]}")
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {sorted(LANGUAGES)}, got {language!r}")
    words = LANGUAGES[language]
    out = Path(out)
    splits = split_ids(num_images, seed)
    karpathy, scenes_json, corpus = [], [], []
    vqa_q = {s: [] for s in SPLITS}
    vqa_a = {s: [] for s in SPLITS}
    snli = {s: [] for s in SPLITS}
    det_images = {s: [] for s in SPLITS}
    det_anns = {s: [] for s in SPLITS}
    refs, sent_id, ann_id = [], 0, 0
    for image_id in range(1, num_images + 1):
        split = splits[image_id]
        rng = random.Random(f"shapes-{seed}-{image_id}")
        scene, image = draw_scene(rng, image_size, counts, (low, high))
        name = file_name(split, image_id)
        path = out / "images" / split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        path.write_bytes(buffer.getvalue())
        image_entry = {"id": image_id, "file_name": name, "width": image_size, "height": image_size}
        det_images[split].append(image_entry)

        refs_text = words.captions(scene, rng)
        sentences = []
        for text in refs_text:
            tokens = text.lower().rstrip(".").replace(",", "").replace(":", "").split()
            sentences.append({"raw": text, "tokens": tokens, "imgid": image_id - 1, "sentid": sent_id})
            sent_id += 1
        karpathy.append(
            {
                "filepath": split,
                "filename": name,
                "imgid": image_id - 1,
                "cocoid": image_id,
                "split": split,
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
            }
        )

        for k, question in enumerate(words.questions(scene, rng, questions_per_image)):
            qid = image_id * 10 + k
            answers = annotator_answers(question, rng)
            vqa_q[split].append({"image_id": image_id, "question": question.question, "question_id": qid})
            vqa_a[split].append(
                {
                    "question_id": qid,
                    "image_id": image_id,
                    "question_type": question.question_type,
                    "answer_type": question.answer_type,
                    "multiple_choice_answer": question.answer,
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(answers)
                    ],
                }
            )

        objects = []
        for index, shape in enumerate(scene.shapes):
            ann_id += 1
            x0, y0, x1, y1 = shape.box
            det_anns[split].append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[shape.shape],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": shape.area,
                    "iscrowd": 0,
                    "color": words.COLOUR_WORDS[shape.colour],
                }
            )
            objects.append(
                {
                    "ann_id": ann_id,
                    "shape": shape.shape,
                    "color": shape.colour,
                    "rgb": list(COLOURS[shape.colour]),
                    "box": list(shape.box),
                    "area": shape.area,
                }
            )
            expressions = words.referring_expressions(scene, index)
            if expressions:
                chosen = rng.sample(expressions, min(3, len(expressions)))
                sentences = []
                for text in chosen:
                    sentences.append({"sent": text, "raw": text, "tokens": text.split(), "sent_id": sent_id})
                    sent_id += 1
                refs.append(
                    {
                        "ref_id": len(refs),
                        "ann_id": ann_id,
                        "image_id": image_id,
                        "split": split,
                        "category_id": CATEGORY_IDS[shape.shape],
                        "file_name": name,
                        "sentences": sentences,
                        "sent_ids": [s["sent_id"] for s in sentences],
                    }
                )

        for k, (hypothesis, label) in enumerate(words.hypotheses(scene, rng)):
            snli[split].append(
                {
                    "Flikr30kID": name,
                    "sentence1": rng.choice(refs_text),
                    "sentence2": hypothesis,
                    "gold_label": label,
                    "pairID": f"{name}#{k}{label[0]}",
                    "captionID": f"{name}#0",
                }
            )
        if split == "train":
            corpus.append(words.corpus_paragraph(scene, refs_text, rng))
        scenes_json.append(
            {
                "image_id": image_id,
                "split": split,
                "file_name": name,
                "width": image_size,
                "height": image_size,
                "background": scene.background,
                "gradient": scene.gradient,
                "objects": objects,
            }
        )

    # in the text's language, so that detection's labels ("red diamond", "红色 菱形") use the words of the expressions
    categories = [
        {"id": i, "name": words.SHAPE_WORDS[shape], "supercategory": "shape"} for shape, i in CATEGORY_IDS.items()
    ]
    _write_json(out / "dataset_coco.json", {"dataset": "shapes", "images": karpathy})
    for split in SPLITS:
        _write_json(
            out / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json",
            {
                "info": {"description": "shapes"},
                "task_type": "Open-Ended",
                "data_type": "mscoco",
                "data_subtype": split,
                "license": {},
                "questions": vqa_q[split],
            },
        )
        _write_json(
            out / "vqa" / f"v2_mscoco_{split}_annotations.json",
            {
                "info": {"description": "shapes"},
                "data_type": "mscoco",
                "data_subtype": split,
                "license": {},
                "annotations": vqa_a[split],
            },
        )
        _write_json(
            out / "detection" / f"instances_{split}.json",
            {"images": det_images[split], "annotations": det_anns[split], "categories": categories},
        )
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in snli[split])
        (out / "snli_ve").mkdir(parents=True, exist_ok=True)
        (out / "snli_ve" / f"snli_ve_{SNLI_SPLIT_NAMES[split]}.jsonl").write_text(lines, encoding="utf-8")
    _write_json(
        out / "refcoco" / "instances.json",
        {
            "images": [i for s in SPLITS for i in det_images[s]],
            "annotations": sorted((a for s in SPLITS for a in det_anns[s]), key=lambda a: a["id"]),
            "categories": categories,
        },
    )
    (out / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (out / "corpus.txt").write_text("\n\n".join("\n".join(p) for p in corpus) + "\n", encoding="utf-8")
    _write_json(out / "scenes.json", scenes_json)
    images_per_split = {s: sum(1 for v in splits.values() if v == s) for s in SPLITS}
    summary = {
        "images": images_per_split,
        "questions": {s: len(vqa_q[s]) for s in SPLITS},
        "refs": len(refs),
        "sentences": sum(len(r["sentences"]) for r in refs),
        "snli_ve_pairs": {s: len(snli[s]) for s in SPLITS},
        "corpus_paragraphs": len(corpus),
    }
    _write_json(
        out / "shapes_summary.json",
        {
            "seed": seed,
            "num_images": num_images,
            "image_size": image_size,
            "counts": list(counts),
            "shape_scale": [low, high],
            **summary,
        },
    )
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    summary = generate_shapes(
        args.out,
        args.num_images,
        args.seed,
        args.image_size,
        args.questions_per_image,
        tuple(args.counts),
        tuple(args.shape_scale),
        args.language,
    )
    print(f"ofa-prepare: shapes raw data in {args.out}: {json.dumps(summary)}")
    return summary
