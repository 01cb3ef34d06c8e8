"""Text about a shapes scene: captions, VQA questions, referring expressions, entailment hypotheses, corpus.

The language half of the `shapes` dataset. Everything is derived from the drawn scene, so every statement
is true of the image (contradictions are false on purpose, neutral ones undecidable); referring expressions
are produced only when they pick out exactly one shape.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from data_recipes.shapes_scene import COLOURS, SHAPES, DrawnShape, Scene

NUMBER_WORDS = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
#: the detection / RefCOCO annotations' colour and category names (the scene's own names in English)
COLOUR_WORDS = {c: c for c in COLOURS}
SHAPE_WORDS = {s: s for s in SHAPES}
#: a horizontal/vertical gap smaller than this share of the image does not count as "left of"/"above"
CLEAR_GAP = 0.12


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(colour: str, shape: str, count: int = 1) -> str:
    """'a red circle', 'an orange star', 'two blue squares'."""
    if count == 1:
        return f"{_article(colour)} {colour} {shape}"
    return f"{NUMBER_WORDS.get(count, str(count))} {colour} {shape}s"


def join_words(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def left_to_right(scene: Scene) -> list[DrawnShape]:
    return sorted(scene.shapes, key=lambda s: (s.centre[0], s.centre[1]))


def listing(shapes: list[DrawnShape]) -> str:
    """Groups equal (colour, shape) pairs: 'two red circles and a blue square'."""
    counts = Counter((s.colour, s.shape) for s in shapes)
    order = list(dict.fromkeys((s.colour, s.shape) for s in shapes))
    return join_words([noun_phrase(c, s, counts[(c, s)]) for c, s in order])


def relation(a: DrawnShape, b: DrawnShape, size: int) -> str:
    """Where a is relative to b: 'to the left of', 'above', ... or 'next to'."""
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dx) >= abs(dy) and abs(dx) > CLEAR_GAP * size:
        return "to the left of" if dx < 0 else "to the right of"
    if abs(dy) > CLEAR_GAP * size:
        return "above" if dy < 0 else "below"
    return "next to"


def region(shape: DrawnShape, size: int) -> str:
    """'in the top left corner', 'on the left', 'at the bottom', 'in the middle'."""
    cx, cy = shape.centre
    h = "left" if cx < size / 3 else "right" if cx > 2 * size / 3 else "center"
    v = "top" if cy < size / 3 else "bottom" if cy > 2 * size / 3 else "middle"
    if h == "center" and v == "middle":
        return "in the middle of the image"
    if v == "middle":
        return f"on the {h}"
    if h == "center":
        return f"at the {v}"
    return f"in the {v} {h} corner"


def _sentence_case(text: str, rng: random.Random) -> str:
    """COCO references mix 'A red circle.' and 'a red circle': keep some of that variety."""
    return text[0].upper() + text[1:] + "." if rng.random() < 0.5 else text


def captions(scene: Scene, rng: random.Random) -> list[str]:
    """Five paraphrased references for the scene."""
    ordered = left_to_right(scene)
    listed = listing(ordered)
    count = len(ordered)
    first = ordered[0]
    verb = "are" if sum(1 for s in ordered if (s.colour, s.shape) == (first.colour, first.shape)) > 1 else "is"
    refs = [listed, f"there {verb} {listed} on a {scene.background} background"]
    if count == 1:
        only = ordered[0]
        refs.append(f"a single {only.colour} {only.shape} {region(only, scene.size)}")
        refs.append(f"an image of {noun_phrase(only.colour, only.shape)} on a {scene.background} background")
        refs.append(f"{noun_phrase(only.colour, only.shape)} {region(only, scene.size)}")
    else:
        a, b = rng.sample(ordered, 2)
        refs.append(
            f"there is {noun_phrase(a.colour, a.shape)} {relation(a, b, scene.size)} {noun_phrase(b.colour, b.shape)}"
        )
        refs.append(f"{NUMBER_WORDS[count]} shapes: {listed}")
        refs.append("from left to right: " + ", ".join(noun_phrase(s.colour, s.shape) for s in ordered))
    return [_sentence_case(r, rng) for r in refs]


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    answer_type: str  # VQA's: yes/no, number, other
    question_type: str  # VQA-style question prefix
    wrong: tuple[str, ...]  # plausible wrong answers, for annotator noise


def _unique(shapes: tuple[DrawnShape, ...], **attrs: str) -> list[DrawnShape]:
    return [s for s in shapes if all(getattr(s, k) == v for k, v in attrs.items())]


def extreme(scene: Scene, side: str) -> DrawnShape | None:
    """The shape clearly furthest left/right/up/down (by CLEAR_GAP over every other), if there is one."""
    if len(scene.shapes) < 2:
        return None
    axis, sign = {"left": (0, 1), "right": (0, -1), "top": (1, 1), "bottom": (1, -1)}[side]
    ranked = sorted(scene.shapes, key=lambda s: sign * s.centre[axis])
    if sign * (ranked[1].centre[axis] - ranked[0].centre[axis]) > CLEAR_GAP * scene.size:
        return ranked[0]
    return None


def questions(scene: Scene, rng: random.Random, limit: int) -> list[Question]:
    """Up to `limit` questions of different kinds (colour, shape, count, yes/no, position)."""
    shapes = scene.shapes
    colours, kinds = sorted(COLOURS), list(SHAPES)
    pool: dict[str, list[Question]] = {"color": [], "shape": [], "count": [], "yesno": [], "position": []}
    for s in shapes:
        if len(_unique(shapes, shape=s.shape)) == 1:
            pool["color"].append(
                Question(
                    f"what color is the {s.shape}?",
                    s.colour,
                    "other",
                    "what color is the",
                    tuple(c for c in colours if c != s.colour),
                )
            )
        if len(_unique(shapes, colour=s.colour)) == 1:
            pool["shape"].append(
                Question(
                    f"what shape is the {s.colour} object?",
                    s.shape,
                    "other",
                    "what",
                    tuple(k for k in kinds if k != s.shape),
                )
            )
    total = len(shapes)
    pool["count"].append(
        Question(
            "how many shapes are there?", str(total), "number", "how many", (str(total + 1), str(max(total - 1, 0)))
        )
    )
    kind = rng.choice(kinds)
    n_kind = len(_unique(shapes, shape=kind))
    pool["count"].append(
        Question(
            f"how many {kind}s are there?",
            str(n_kind),
            "number",
            "how many",
            (str(n_kind + 1), str(max(n_kind - 1, 0)) if n_kind else "1"),
        )
    )
    colour, kind = rng.choice(colours), rng.choice(kinds)
    if rng.random() < 0.5 and shapes:
        pick = rng.choice(shapes)
        colour, kind = pick.colour, pick.shape
    present = bool(_unique(shapes, colour=colour, shape=kind))
    pool["yesno"].append(
        Question(
            f"is there {noun_phrase(colour, kind)}?",
            "yes" if present else "no",
            "yes/no",
            "is there a",
            ("no" if present else "yes",),
        )
    )
    for side, where in (
        ("left", "on the left"),
        ("right", "on the right"),
        ("top", "at the top"),
        ("bottom", "at the bottom"),
    ):
        s = extreme(scene, side)
        if s is not None:
            pool["position"].append(
                Question(
                    f"what color is the shape {where}?",
                    s.colour,
                    "other",
                    "what color is the",
                    tuple(c for c in colours if c != s.colour),
                )
            )
            pool["position"].append(
                Question(f"what shape is {where}?", s.shape, "other", "what", tuple(k for k in kinds if k != s.shape))
            )
    chosen = []
    groups = [g for g in pool if pool[g]]
    rng.shuffle(groups)
    for group in groups[:limit]:
        chosen.append(rng.choice(pool[group]))
    return chosen


def annotator_answers(question: Question, rng: random.Random, noise: float = 0.06) -> list[str]:
    """Ten human-like answers: mostly the true one, a few plausible mistakes (at most 2, so the truth wins)."""
    answers, mistakes = [], 0
    for _ in range(10):
        if mistakes < 2 and question.wrong and rng.random() < noise:
            answers.append(rng.choice(question.wrong))
            mistakes += 1
        else:
            answers.append(question.answer)
    return answers


def referring_expressions(scene: Scene, index: int) -> list[str]:
    """Expressions that pick out shape `index` and no other (may be empty)."""
    shapes = scene.shapes
    s = shapes[index]
    found = []
    if len(_unique(shapes, colour=s.colour, shape=s.shape)) == 1:
        found.append(f"the {s.colour} {s.shape}")
    if len(_unique(shapes, shape=s.shape)) == 1:
        found.append(f"the {s.shape}" if len(shapes) > 1 else "the only shape")
    if len(_unique(shapes, colour=s.colour)) == 1 and len(shapes) > 1:
        found.append(f"the {s.colour} shape")
    for side, words in (
        ("left", ("the shape on the left", "the leftmost shape")),
        ("right", ("the shape on the right", "the rightmost shape")),
        ("top", ("the shape at the top", "the topmost shape")),
        ("bottom", ("the shape at the bottom", "the lowest shape")),
    ):
        if extreme(scene, side) is s:
            found.append(words[0] if len(shapes) == 2 else words[1])
    return found


def hypotheses(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """One (hypothesis, label) per SNLI-VE label: true, undecidable and false statements about the scene."""
    shapes = scene.shapes
    some = rng.choice(shapes)
    total = len(shapes)
    true = [
        f"there is {noun_phrase(some.colour, some.shape)}",
        f"there {'is one shape' if total == 1 else f'are {NUMBER_WORDS[total]} shapes'} in the picture",
        f"the image contains {_article(some.shape)} {some.shape}",
    ]
    absent = [(c, k) for c in sorted(COLOURS) for k in SHAPES if not _unique(shapes, colour=c, shape=k)]
    colour, kind = rng.choice(absent)
    wrong_total = rng.choice([n for n in range(1, 6) if n != total])
    false = [
        f"there is {noun_phrase(colour, kind)}",
        f"there {'is one shape' if wrong_total == 1 else f'are {NUMBER_WORDS[wrong_total]} shapes'} in the picture",
        "the picture is completely empty",
    ]
    neutral = [
        f"the {some.colour} {some.shape} is made of paper",
        "someone drew these shapes by hand yesterday",
        f"the {some.shape} is about to move",
        "the picture hangs in a classroom",
    ]
    return [(rng.choice(true), "entailment"), (rng.choice(neutral), "neutral"), (rng.choice(false), "contradiction")]


FACTS = {
    "circle": "a circle is round and has no corners",
    "square": "a square has four equal sides",
    "triangle": "a triangle has three corners",
    "diamond": "a diamond looks like a square standing on one corner",
    "star": "a star has five points",
    "hexagon": "a hexagon has six sides",
}


def corpus_paragraph(scene: Scene, refs: list[str], rng: random.Random) -> list[str]:
    """Two to three sentences about one scene, one per line."""
    sentences = [refs[0], rng.choice(refs[1:]), FACTS[rng.choice(scene.shapes).shape]]
    return [s.rstrip(".")[0].upper() + s.rstrip(".")[1:] + "." for s in sentences[: rng.choice((2, 3))]]
