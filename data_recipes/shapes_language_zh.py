"""Chinese text about a shapes scene (``language=zh``): the same statements as :mod:`data_recipes.shapes_language`
(captions, VQA questions with their answers, referring expressions, entailment hypotheses, corpus), in Chinese.

The scene geometry (left/right, regions, extremes, uniqueness) is the English module's; only the words differ.
VQA answers are Chinese words (``红色``, ``圆形``, ``有`` / ``没有``) or digits.
"""

from __future__ import annotations

import random
from collections import Counter

from data_recipes.shapes_language import CLEAR_GAP, Question, _unique, extreme, left_to_right
from data_recipes.shapes_scene import COLOURS, SHAPES, DrawnShape, Scene

COLOUR_WORDS = {
    "red": "红色",
    "green": "绿色",
    "blue": "蓝色",
    "yellow": "黄色",
    "purple": "紫色",
    "orange": "橙色",
    "cyan": "青色",
    "pink": "粉色",
}
SHAPE_WORDS = {
    "circle": "圆形",
    "square": "正方形",
    "triangle": "三角形",
    "diamond": "菱形",
    "star": "星形",
    "hexagon": "六边形",
}
BACKGROUND_WORDS = {"dark": "深色", "grey": "灰色", "light": "浅色", "beige": "米色", "slate": "青灰色"}
NUMBER_WORDS = {0: "零", 1: "一", 2: "两", 3: "三", 4: "四", 5: "五"}
SIDE_WORDS = {"left": "左边", "right": "右边", "top": "上方", "bottom": "下方"}
EXTREME_WORDS = {"left": "最左边", "right": "最右边", "top": "最上方", "bottom": "最下方"}


def noun_phrase(colour: str, shape: str, count: int = 1) -> str:
    """'一个红色的圆形', '两个蓝色的正方形'."""
    return f"{NUMBER_WORDS.get(count, str(count))}个{COLOUR_WORDS[colour]}的{SHAPE_WORDS[shape]}"


def join_words(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return "、".join(items[:-1]) + "和" + items[-1]


def listing(shapes: list[DrawnShape]) -> str:
    counts = Counter((s.colour, s.shape) for s in shapes)
    order = list(dict.fromkeys((s.colour, s.shape) for s in shapes))
    return join_words([noun_phrase(c, s, counts[(c, s)]) for c, s in order])


def relation(a: DrawnShape, b: DrawnShape, size: int) -> str:
    """Where a is relative to b, as the tail of '在 b 的…': '左边', '上方', ... or '旁边'."""
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dx) >= abs(dy) and abs(dx) > CLEAR_GAP * size:
        return "左边" if dx < 0 else "右边"
    if abs(dy) > CLEAR_GAP * size:
        return "上方" if dy < 0 else "下方"
    return "旁边"


def region(shape: DrawnShape, size: int) -> str:
    """'在左上角', '在左边', '在上方', '在图片中间'."""
    cx, cy = shape.centre
    h = "左" if cx < size / 3 else "右" if cx > 2 * size / 3 else ""
    v = "上" if cy < size / 3 else "下" if cy > 2 * size / 3 else ""
    if not h and not v:
        return "在图片中间"
    if not v:
        return f"在{h}边"
    if not h:
        return f"在{v}方"
    return f"在{h}{v}角"


def captions(scene: Scene, rng: random.Random) -> list[str]:
    """Five paraphrased references for the scene."""
    ordered = left_to_right(scene)
    listed = listing(ordered)
    background = BACKGROUND_WORDS.get(scene.background, scene.background)
    refs = [listed, f"{background}背景上有{listed}"]
    if len(ordered) == 1:
        only = ordered[0]
        refs.append(f"只有一个{COLOUR_WORDS[only.colour]}的{SHAPE_WORDS[only.shape]}{region(only, scene.size)}")
        refs.append(f"一张{background}背景上有{noun_phrase(only.colour, only.shape)}的图片")
        refs.append(f"{noun_phrase(only.colour, only.shape)}{region(only, scene.size)}")
    else:
        a, b = rng.sample(ordered, 2)
        refs.append(f"{noun_phrase(a.colour, a.shape)}在{noun_phrase(b.colour, b.shape)}的{relation(a, b, scene.size)}")
        refs.append(f"{NUMBER_WORDS[len(ordered)]}个形状：{listed}")
        refs.append("从左到右：" + "，".join(noun_phrase(s.colour, s.shape) for s in ordered))
    return [r + "。" if rng.random() < 0.5 else r for r in refs]


def questions(scene: Scene, rng: random.Random, limit: int) -> list[Question]:
    """Up to `limit` questions of different kinds (colour, shape, count, yes/no, position)."""
    shapes = scene.shapes
    colours = [COLOUR_WORDS[c] for c in sorted(COLOURS)]
    kinds = [SHAPE_WORDS[k] for k in SHAPES]
    pool: dict[str, list[Question]] = {"color": [], "shape": [], "count": [], "yesno": [], "position": []}
    for s in shapes:
        colour, kind = COLOUR_WORDS[s.colour], SHAPE_WORDS[s.shape]
        if len(_unique(shapes, shape=s.shape)) == 1:
            wrong = tuple(c for c in colours if c != colour)
            pool["color"].append(Question(f"{kind}是什么颜色？", colour, "other", "什么颜色", wrong))
        if len(_unique(shapes, colour=s.colour)) == 1:
            wrong = tuple(k for k in kinds if k != kind)
            pool["shape"].append(Question(f"{colour}的物体是什么形状？", kind, "other", "什么形状", wrong))
    total = len(shapes)
    pool["count"].append(
        Question("图中有几个形状？", str(total), "number", "几个", (str(total + 1), str(max(total - 1, 0))))
    )
    kind = rng.choice(SHAPES)
    n_kind = len(_unique(shapes, shape=kind))
    pool["count"].append(
        Question(
            f"图中有几个{SHAPE_WORDS[kind]}？",
            str(n_kind),
            "number",
            "几个",
            (str(n_kind + 1), str(max(n_kind - 1, 0)) if n_kind else "1"),
        )
    )
    colour, kind = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
    if rng.random() < 0.5 and shapes:
        pick = rng.choice(shapes)
        colour, kind = pick.colour, pick.shape
    present = bool(_unique(shapes, colour=colour, shape=kind))
    pool["yesno"].append(
        Question(
            f"图中有{COLOUR_WORDS[colour]}的{SHAPE_WORDS[kind]}吗？",
            "有" if present else "没有",
            "yes/no",
            "有吗",
            ("没有" if present else "有",),
        )
    )
    for side in ("left", "right", "top", "bottom"):
        s = extreme(scene, side)
        if s is not None:
            colour, kind = COLOUR_WORDS[s.colour], SHAPE_WORDS[s.shape]
            where = SIDE_WORDS[side]
            wrong_colours = tuple(c for c in colours if c != colour)
            pool["position"].append(Question(f"{where}的形状是什么颜色？", colour, "other", "什么颜色", wrong_colours))
            wrong_kinds = tuple(k for k in kinds if k != kind)
            pool["position"].append(Question(f"{where}是什么形状？", kind, "other", "什么形状", wrong_kinds))
    chosen = []
    groups = [g for g in pool if pool[g]]
    rng.shuffle(groups)
    for group in groups[:limit]:
        chosen.append(rng.choice(pool[group]))
    return chosen


def referring_expressions(scene: Scene, index: int) -> list[str]:
    """Expressions that pick out shape `index` and no other (may be empty)."""
    shapes = scene.shapes
    s = shapes[index]
    colour, kind = COLOUR_WORDS[s.colour], SHAPE_WORDS[s.shape]
    found = []
    if len(_unique(shapes, colour=s.colour, shape=s.shape)) == 1:
        found.append(f"{colour}的{kind}")
    if len(_unique(shapes, shape=s.shape)) == 1:
        found.append(kind if len(shapes) > 1 else "唯一的形状")
    if len(_unique(shapes, colour=s.colour)) == 1 and len(shapes) > 1:
        found.append(f"{colour}的形状")
    for side in ("left", "right", "top", "bottom"):
        if extreme(scene, side) is s:
            found.append(f"{SIDE_WORDS[side] if len(shapes) == 2 else EXTREME_WORDS[side]}的形状")
    return found


def hypotheses(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """One (hypothesis, label) per SNLI-VE label: true, undecidable and false statements about the scene."""
    shapes = scene.shapes
    some = rng.choice(shapes)
    total = len(shapes)
    true = [
        f"图中有{noun_phrase(some.colour, some.shape)}",
        f"图中有{NUMBER_WORDS[total]}个形状",
        f"这张图片里有{SHAPE_WORDS[some.shape]}",
    ]
    absent = [(c, k) for c in sorted(COLOURS) for k in SHAPES if not _unique(shapes, colour=c, shape=k)]
    colour, kind = rng.choice(absent)
    wrong_total = rng.choice([n for n in range(1, 6) if n != total])
    false = [f"图中有{noun_phrase(colour, kind)}", f"图中有{NUMBER_WORDS[wrong_total]}个形状", "这张图片完全是空的"]
    neutral = [
        f"{COLOUR_WORDS[some.colour]}的{SHAPE_WORDS[some.shape]}是用纸做的",
        "这些形状是昨天有人手画的",
        f"{SHAPE_WORDS[some.shape]}马上就要移动了",
        "这张图片挂在教室里",
    ]
    return [(rng.choice(true), "entailment"), (rng.choice(neutral), "neutral"), (rng.choice(false), "contradiction")]


FACTS = {
    "circle": "圆形是圆的，没有角",
    "square": "正方形有四条相等的边",
    "triangle": "三角形有三个角",
    "diamond": "菱形像一个立在一个角上的正方形",
    "star": "星形有五个角",
    "hexagon": "六边形有六条边",
}


def corpus_paragraph(scene: Scene, refs: list[str], rng: random.Random) -> list[str]:
    """Two to three sentences about one scene, one per line."""
    sentences = [refs[0], rng.choice(refs[1:]), FACTS[rng.choice(scene.shapes).shape]]
    return [s.rstrip("。") + "。" for s in sentences[: rng.choice((2, 3))]]
