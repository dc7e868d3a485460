"""The synthetic "shapes" world: a deterministic, learnable vision-language benchmark.

Each image shows 1..max_objects coloured shapes, each inside its own cell of a grid×grid layout
(4×4 on 64 px matches a ViT with 16-px patches), on a tinted, lit, noisy background. From each
image's scene (its object list) come paraphrased captions, VQA questions with 10 noisy annotator
answers, GQA-style compositional questions with one answer, and NLVR2-style true/false statements
about image pairs, all written as the canonical tables of `vltune.data.tables`.

Every draw comes from a numpy Generator seeded by (seed, split, stream), so the same config gives
byte-identical files. Questions are only asked when their referents are unique in the scene, and
answers are balanced within each question type (the next question prefers the answers its type has
given least), so no type can be answered from a prior alone.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from vltune.data.tables import SCHEMAS, SPLITS, TABLE_KINDS, table_path, write_table, write_table_manifest
from vltune.utils.io import sha256_file, write_json

COLORS = {"red": (215, 45, 45), "orange": (240, 140, 30), "yellow": (230, 210, 45),
          "green": (50, 165, 65), "blue": (45, 85, 215), "purple": (145, 65, 185)}
SHAPES = ("circle", "square", "triangle", "cross")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
# What an annotator who gets it wrong says instead: hue neighbours, look-alikes and loose synonyms.
NEAR = {"red": ("orange", "purple"), "orange": ("red", "yellow"), "yellow": ("orange", "green"),
        "green": ("yellow", "blue"), "blue": ("green", "purple"), "purple": ("blue", "red"),
        "circle": ("square", "oval"), "square": ("circle", "rectangle"),
        "triangle": ("cross", "square"), "cross": ("plus", "triangle")}
OPPOSITE = {"yes": "no", "no": "yes", "left": "right", "right": "left", "top": "bottom",
            "bottom": "top", "above": "below", "below": "above"}
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
RELS = {"to the left of": lambda a, b: a["col"] < b["col"],
        "to the right of": lambda a, b: a["col"] > b["col"],
        "above": lambda a, b: a["row"] < b["row"], "below": lambda a, b: a["row"] > b["row"]}
N_ANSWERS = 10  # human answers per VQA question, as in VQA v2
# NLVR2 statement families and weights; "hard" ones stay near chance for a tiny model.
EASY = {"side_has": 3, "both_have": 2, "side_count": 2, "more": 2, "total": 1, "neither": 1}
HARD = {"equal": 1, "exactly_one": 1}
_STREAMS = {"scene": 0, "captions": 1, "vqa": 2, "gqa": 3, "nlvr2": 4}
_DEFAULT_COUNTS = {"train": 4000, "val": 500, "test": 1000}


@dataclass
class WorldConfig:
    """Parameters of the shapes world; the defaults are the embedded default's world."""

    seed: int = 0
    """Seed of every random draw (≥ 0): the same config gives byte-identical tables."""
    image_size: int = 64
    """Image side in pixels."""
    grid: int = 4
    """Objects sit in distinct cells of a grid×grid layout (one cell per ViT patch at 64/16)."""
    min_objects: int = 1
    """Fewest objects in an image."""
    max_objects: int = 4
    """Most objects in an image (≤ grid²)."""
    n_images: dict[str, int] = field(default_factory=lambda: dict(_DEFAULT_COUNTS))
    """Images per split (splits: train, val, test; a missing split has none)."""
    captions_per_image: int = 5
    """Reference captions per image, distinct paraphrases of the same scene."""
    vqa_per_image: int = 3
    """VQA questions per image."""
    gqa_per_image: int = 2
    """GQA-style compositional questions per image."""
    nlvr2_pairs: dict[str, int] = field(default_factory=lambda: dict(_DEFAULT_COUNTS))
    """NLVR2-style image pairs per split (both images from that split; labels balanced)."""
    annotator_noise: float = 0.15
    """Mean probability that a VQA annotator deviates from the true answer (varies per question)."""
    pixel_noise: float = 3.0
    """Standard deviation of the per-pixel Gaussian noise, on the 0–255 scale."""
    color_jitter: int = 12
    """Largest per-channel deviation of an object's colour from its named colour."""
    position_jitter: float = 0.25
    """How far an object may move off its cell centre, as a share of the room left in the cell
    (0 = centred; 1 = anywhere inside the cell). Measured with a linear probe on the tiny CLIP's
    grid tokens after 250 steps: object shape 34% at 1.0, 51% at 0.25, 56% at 0.1 (colour 99%)."""
    nlvr2_hard_share: float = 0.1
    """Share of NLVR2 statements about equal counts / exactly one image (near chance when tiny)."""

    def __post_init__(self) -> None:
        lows = {"seed": 0, "image_size": 8, "grid": 1, "min_objects": 1, "max_objects": 1,
                "captions_per_image": 1, "vqa_per_image": 0, "gqa_per_image": 0, "color_jitter": 0}
        for name, low in lows.items():
            v = getattr(self, name)
            _require(name, _is_int(v) and v >= low, f"an int ≥ {low}", v)
        # annotator_noise ≤ 0.5: beyond it the true answer would no longer be the usual majority.
        for name, high in (("annotator_noise", 0.5), ("pixel_noise", 64.0),
                           ("nlvr2_hard_share", 1.0)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= high
            _require(name, ok, f"a number in [0, {high}]", v)
            setattr(self, name, float(v))
        for name in ("n_images", "nlvr2_pairs"):
            v = getattr(self, name)
            ok = isinstance(v, Mapping) and all(k in SPLITS and _is_int(n) and n >= 0
                                                for k, n in v.items())
            _require(name, ok, f"a mapping from {'/'.join(SPLITS)} to an int ≥ 0", v)
            setattr(self, name, {k: v[k] for k in SPLITS if k in v})
        _require("max_objects", self.min_objects <= self.max_objects <= self.grid ** 2,
                 f"between min_objects ({self.min_objects}) and grid² ({self.grid ** 2})",
                 self.max_objects)
        _require("image_size", self.image_size >= 8 * self.grid, f"≥ 8 × grid = {8 * self.grid}",
                 self.image_size)
        for split, n in self.nlvr2_pairs.items():
            _require("nlvr2_pairs", n == 0 or self.n_images.get(split, 0) >= 2,
                     f"no pairs for split {split!r}, which has fewer than 2 images", n)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorldConfig":
        """Build from a config mapping; raise ValueError naming an unknown or invalid key."""
        if not isinstance(d, Mapping):
            raise ValueError(f"world config: expected a mapping, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        for key in d:
            if key not in known:
                raise ValueError(f"world config: unknown key {key!r} (known: {', '.join(known)})")
        return cls(**{k: dict(v) if isinstance(v, Mapping) else v for k, v in d.items()})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _require(key: str, ok: bool, expected: str, got: Any) -> None:
    if not ok:
        raise ValueError(f"world config key {key!r}: expected {expected}, got {got!r}")


def _one(seq, rng):
    """A uniformly random element of a sequence (keeps Python types, unlike rng.choice; and a
    scalar rng.random() is several times faster than rng.integers, which matters here)."""
    return seq[int(rng.random() * len(seq))]


# ----------------------------------------------------------------------------- scenes and images

def _sample_scene(cfg: WorldConfig, rng: np.random.Generator) -> list[dict]:
    """Objects in distinct cells, reading order, each jittered and sized to stay inside its cell."""
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    cell = cfg.image_size / cfg.grid
    cells = sorted(int(c) for c in rng.choice(cfg.grid ** 2, size=n, replace=False))
    u = rng.random((n, 6)).tolist()  # one draw per image: scalar draws dominate the cost otherwise
    jitter = rng.integers(-cfg.color_jitter, cfg.color_jitter + 1, size=(n, 3)).tolist()
    objs = []
    for c, (u_size, u_r, u_x, u_y, u_color, u_shape), jit in zip(cells, u, jitter):
        row, col = divmod(c, cfg.grid)
        size = "small" if u_size < 0.5 else "large"
        r = cell * (0.2 + 0.07 * u_r if size == "small" else 0.33 + 0.09 * u_r)
        slack = max(cell / 2 - r - 0.5, 0.0) * cfg.position_jitter
        color = tuple(COLORS)[int(u_color * len(COLORS))]
        objs.append({
            "shape": SHAPES[int(u_shape * len(SHAPES))], "color": color, "size": size, "row": row,
            "col": col, "cx": round((col + 0.5) * cell + (2 * u_x - 1) * slack, 2),
            "cy": round((row + 0.5) * cell + (2 * u_y - 1) * slack, 2), "r": round(r, 2),
            "rgb": [min(max(v + j, 0), 255) for v, j in zip(COLORS[color], jit)],
        })
    return objs


def _draw_shape(draw: ImageDraw.ImageDraw, o: dict, k: int) -> None:
    x, y, r, fill = o["cx"] * k, o["cy"] * k, o["r"] * k, tuple(o["rgb"])
    if o["shape"] == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif o["shape"] == "square":
        h = 0.85 * r  # about the circle's area
        draw.rectangle([x - h, y - h, x + h, y + h], fill=fill)
    elif o["shape"] == "triangle":
        draw.polygon([(x, y - r), (x - r, y + 0.8 * r), (x + r, y + 0.8 * r)], fill=fill)
    else:
        t = 0.33 * r
        draw.rectangle([x - r, y - t, x + r, y + t], fill=fill)
        draw.rectangle([x - t, y - r, x + t, y + r], fill=fill)


def _render(objs: list[dict], cfg: WorldConfig, rng: np.random.Generator) -> bytes:
    """PNG bytes: tinted background, shapes drawn at 2× then box-filtered (anti-aliasing), a
    random lighting gradient and per-pixel noise, so the images are not trivially clean."""
    size, k = cfg.image_size, 2
    bg = np.clip(rng.integers(60, 200) + rng.integers(-12, 13, size=3), 0, 255)
    im = Image.new("RGB", (size * k, size * k), tuple(int(v) for v in bg))
    draw = ImageDraw.Draw(im)
    for o in objs:
        _draw_shape(draw, o, k)
    arr = np.asarray(im.resize((size, size), Image.BOX), dtype=np.float32)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    tilt = rng.uniform(-18, 18, size=2).astype(np.float32)
    light = tilt[0] * ramp[None, :] + tilt[1] * ramp[:, None]
    noise = rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(cfg.pixel_noise)
    arr = arr + light[..., None] + noise
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- scene language

def _count(objs: list[dict], color: str | None = None, shape: str | None = None) -> int:
    return sum((color is None or o["color"] == color) and (shape is None or o["shape"] == shape)
               for o in objs)


def _tally(objs: list[dict]) -> Counter:
    """Objects per colour ("red"), per shape ("circle") and per both ("red circle")."""
    return Counter(k for o in objs for k in (o["color"], o["shape"], f"{o['color']} {o['shape']}"))


def _region(o: dict, grid: int) -> str:
    """"top left", "bottom right", ...; "left"/"top"/"center" on an odd grid's middle row/column."""
    half = (grid - 1) / 2
    v = "top" if o["row"] < half else "bottom" if o["row"] > half else ""
    h = "left" if o["col"] < half else "right" if o["col"] > half else ""
    return f"{v} {h}".strip() or "center"


def _word(n: int) -> str:
    return WORDS[n] if n < len(WORDS) else str(n)


def _refs(objs: list[dict], o: dict, grid: int, avoid: str | None = None) -> list[str]:
    """Noun phrases that pick out ``o`` alone; with ``avoid``, ones not naming that attribute
    (colour or shape: the one asked about) and also its region ("object in the top left")."""
    out, n = [], _tally(objs)
    if avoid != "color" and n[o["color"]] == 1:
        out.append(f"{o['color']} object")
    if avoid != "shape" and n[o["shape"]] == 1:
        out.append(o["shape"])
    if avoid is None and n[f"{o['color']} {o['shape']}"] == 1:
        out.append(f"{o['color']} {o['shape']}")
    if avoid is not None and [_region(x, grid) for x in objs].count(_region(o, grid)) == 1:
        out.append(f"object in the {_region(o, grid)}")
    return out


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _groups(objs: list[dict], key: str) -> list[tuple[str, int]]:
    return sorted(Counter(o[key] for o in objs).items(), key=lambda kv: (-kv[1], kv[0]))


def _caption_templates(objs: list[dict], grid: int, rng: np.random.Generator) -> list:
    """Caption makers (called lazily, each draws its own wording): listing, counting, positions,
    relations and sizes: different wordings of the same content, like COCO's five captions."""
    n = len(objs)

    # Objects are named in reading order (top left to bottom right), like annotators who scan
    # an image the same way: the wording varies across the five captions, the order does not, so
    # a captioner can learn it (random orders capped CIDEr below the best constant caption).
    def listing(sizes=False):
        return _join([_a(f"{o['size']} {o['color']} {o['shape']}" if sizes else f"{o['color']} {o['shape']}")
                      for o in objs])

    def relation():
        if n == 1:
            return f"a single {objs[0]['color']} {objs[0]['shape']} in the {_region(objs[0], grid)}"
        a, b = objs[0], objs[1]
        rel = [r for r, f in RELS.items() if f(a, b)][0]
        rest = [o for o in objs if o is not a and o is not b]
        name = lambda o: _a(f"{o['color']} {o['shape']}")  # noqa: E731
        tail = f", with {_join([name(o) for o in rest])}" if rest else ""
        return f"{name(a)} {rel} {name(b)}{tail}"

    noun = "shape" if n == 1 else "shapes"
    by_shape = _join([_a(s) if c == 1 else f"{_word(c)} {PLURAL[s]}"
                      for s, c in _groups(objs, "shape")])
    by_color = _join([f"{_word(c)} {col} {'shape' if c == 1 else 'shapes'}"
                      for col, c in _groups(objs, "color")])
    return [
        lambda: f"{_one(['a picture of', 'an image of', 'a drawing of'], rng)} {listing()}",
        lambda: f"there {'is' if n == 1 else 'are'} {_word(n)} {noun}: {listing()}",
        lambda: _one(["an image with ", ""], rng) + _join(
            [f"{_a(o['size'] + ' ' + o['color'] + ' ' + o['shape'])} in the {_region(o, grid)}"
             for o in objs]),
        relation,
        lambda: f"{_word(n)} {noun}: {by_shape}",
        lambda: by_color + _one(["", " on a plain background"], rng),
        lambda: listing(sizes=True),
    ]


def _captions(objs: list[dict], k: int, grid: int, rng: np.random.Generator) -> list[str]:
    """``k`` captions from distinct templates where possible, distinct texts where possible."""
    templates = _caption_templates(objs, grid, rng)
    out: list[str] = []
    for attempt in range(4 * k + len(templates)):
        if len(out) == k:
            break
        if attempt % len(templates) == 0:
            order = rng.permutation(len(templates))
        text = templates[order[attempt % len(templates)]]()
        if text not in out:
            out.append(text)
    # A one-object scene has few distinct wordings: repeat rather than fall short.
    return out + [out[i % len(out)] for i in range(k - len(out))]


# ----------------------------------------------------------------------------- questions

def _yn(b: bool) -> str:
    return "yes" if b else "no"


def _plural(attr: str) -> str:
    return PLURAL.get(attr) or f"{attr} shapes"


def _spatial_refs(objs: list[dict], grid: int, rng: np.random.Generator) -> list[str | None]:
    """One random unique attribute phrase per object (None when it has none), for relations."""
    return [_one(r, rng) if (r := _refs(objs, o, grid)) else None for o in objs]


def _candidates() -> defaultdict:
    """Questions grouped as {question_type: {answer: [question, ...]}}."""
    return defaultdict(lambda: defaultdict(list))


# Questions whose wording does not depend on the scene, made once: (question, attribute(s)).
_ATTRS = (*COLORS, *SHAPES)
_COUNT_QS = [(f"how many {_plural(a)} are there?", a) for a in _ATTRS]
_EXISTS_QS = [(f"is there {_a(k)}?", k)
              for k in (*(f"{c} {s}" for c in COLORS for s in SHAPES), *SHAPES)]
_COMPARE_QS = [(f"are there more {_plural(a)} than {_plural(b)}?", a, b)
               for group in (SHAPES, tuple(COLORS)) for a in group for b in group if a != b]
_LOGIC_QS = [(f"is there {_a(s)} or {_a(c + ' shape')}?",
              f"is there both {_a(s)} and {_a(c + ' shape')}?", s, c)
             for s in SHAPES for c in COLORS]


def _vqa_candidates(objs: list[dict], grid: int, rng: np.random.Generator) -> defaultdict:
    """Every unambiguous VQA question about the scene: color, shape, count, exists, spatial."""
    n, c = _tally(objs), _candidates()
    c["count"][str(len(objs))].append("how many shapes are there?")
    for question, attr in _COUNT_QS:
        c["count"][str(n[attr])].append(question)
    for question, key in _EXISTS_QS:
        c["exists"][_yn(n[key] > 0)].append(question)
    refs = _spatial_refs(objs, grid, rng)
    for o, ref in zip(objs, refs):
        c["color"][o["color"]] += [f"what color is the {r}?" for r in _refs(objs, o, grid, "color")]
        c["shape"][o["shape"]] += [f"what shape is the {r}?" for r in _refs(objs, o, grid, "shape")]
        if ref is None:
            continue
        for rel, f in RELS.items():
            if len(tgt := [x for x in objs if f(x, o)]) == 1:
                c["spatial"][tgt[0]["shape"]].append(f"what is {rel} the {ref}?")
        if " " in (region := _region(o, grid)):  # corners only: "top left" -> top, left
            v, h = region.split(" ")
            c["spatial"][v].append(f"is the {ref} at the top or the bottom?")
            c["spatial"][h].append(f"is the {ref} on the left or the right?")
        for b, ref_b in zip(objs, refs):
            if b is o or ref_b is None:
                continue
            for rel, f in RELS.items():  # only along an axis where they differ: "no" is unambiguous
                if (o["row"] != b["row"]) if rel in ("above", "below") else (o["col"] != b["col"]):
                    c["spatial"][_yn(f(o, b))].append(f"is the {ref} {rel} the {ref_b}?")
    return c


def _gqa_relations(objs: list[dict], refs: list[str | None], c: defaultdict) -> None:
    """Multi-hop questions through a spatial relation or a shared attribute."""
    n = _tally(objs)
    for o, ref in zip(objs, refs):
        if ref is None:
            continue
        for rel, f in RELS.items():
            if len(tgt := [x for x in objs if f(x, o)]) == 1:
                t = tgt[0]
                c["relate_color"][t["color"]].append(f"what color is the shape {rel} the {ref}?")
                c["relate_shape"][t["shape"]].append(f"what shape is the object {rel} the {ref}?")
            there = {x["color"] for x in objs if f(x, o)} | {x["shape"] for x in objs if f(x, o)}
            for a in _ATTRS:
                if n[a] == 1 and a in (o["color"], o["shape"]):
                    continue  # "a square left of the square": trivially no
                c["verify_rel"][_yn(a in there)].append(
                    f"is there {_a(a + ' shape' if a in COLORS else a)} {rel} the {ref}?")
        if len(same := [x for x in objs if x is not o and x["color"] == o["color"]]) == 1:
            c["same_color"][same[0]["shape"]].append(
                f"what shape is the object that has the same color as the {ref}?")
        if len(same := [x for x in objs if x is not o and x["shape"] == o["shape"]]) == 1:
            c["same_shape"][same[0]["color"]].append(
                f"what color is the object with the same shape as the {ref}?")
        for b, ref_b in zip(objs, refs):
            if b is o or ref_b is None:
                continue
            if o["row"] != b["row"]:
                c["choose_rel"]["above" if o["row"] < b["row"] else "below"].append(
                    f"is the {ref} above or below the {ref_b}?")
            if o["col"] != b["col"]:
                c["choose_rel"]["left" if o["col"] < b["col"] else "right"].append(
                    f"is the {ref} to the left or to the right of the {ref_b}?")


def _gqa_candidates(objs: list[dict], grid: int, rng: np.random.Generator) -> defaultdict:
    """Every unambiguous GQA-style question, grouped by family and answer."""
    n, c = _tally(objs), _candidates()
    _gqa_relations(objs, _spatial_refs(objs, grid, rng), c)
    for question, a, b in _COMPARE_QS:
        if n[a] + n[b] > 0:  # "more circles than squares" with neither is a trick question
            c["compare_count"][_yn(n[a] > n[b])].append(question)
    for either, both, s, col in _LOGIC_QS:
        c["logic"][_yn(n[s] + n[col] > 0)].append(either)
        if n[f"{col} {s}"] == 0:  # else "both a circle and a red shape" is ambiguous
            c["logic"][_yn(n[s] > 0 and n[col] > 0)].append(both)
    return c


def _pick(cands: defaultdict, k: int, seen: dict, rng: np.random.Generator) -> list[tuple]:
    """Choose ``k`` distinct (type, question, answer): types in random order (each type once
    before repeats); within a type, an answer it has given least so far (softly), then a
    question with that answer."""
    types = sorted(t for t in cands if any(cands[t].values()))
    order = [types[i] for i in rng.permutation(len(types))]
    chosen: list[tuple[str, str, str]] = []
    for i in range(k * len(order) + k):  # every type gets a chance at every slot, then repeats
        if len(chosen) == k:
            break
        t = order[i % len(order)]
        repeat = i >= k * len(order)  # everything asked already: repeat rather than fall short
        pools = {a: p for a, qs in sorted(cands[t].items())
                 if (p := [q for q in qs if repeat or all(q != c[1] for c in chosen)])}
        if not pools:
            continue
        counts = [seen.setdefault(t, Counter())[a] for a in pools]
        cum = np.cumsum(np.exp((min(counts) - np.array(counts)) / 3.0))  # least-given first, softly
        pos = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        answer = list(pools)[min(pos, len(cum) - 1)]
        chosen.append((t, _one(pools[answer], rng), answer))
        seen[t][answer] += 1
    return chosen


def _answer_type(answer: str) -> str:
    return "yes/no" if answer in ("yes", "no") else "number" if answer.isdigit() else "other"


def _annotate(answer: str, cfg: WorldConfig, rng: np.random.Generator) -> list[str]:
    """Ten annotators: each says the answer or, with a per-question rate (some questions are
    harder) averaging ``annotator_noise``, a plausible confusion; some write numbers as words."""
    p = min(0.45, cfg.annotator_noise * rng.gamma(2.0, 0.5))
    out = []
    for wrong, word in zip(rng.random(N_ANSWERS) < p, rng.random(N_ANSWERS) < 0.1):
        if answer.isdigit():
            n = int(answer) + (int(_one((-1, 1), rng)) if wrong and answer != "0" else int(wrong))
            out.append(_word(n) if word else str(n))
        elif wrong:
            out.append(OPPOSITE.get(answer) or _one(NEAR[answer], rng))
        else:
            out.append(answer)
    return out


# ----------------------------------------------------------------------------- NLVR2 pairs

def _statement(family: str, left: list[dict], right: list[dict], cfg: WorldConfig,
               rng: np.random.Generator) -> tuple[str, bool]:
    """A statement of ``family`` about an image pair with random parameters, and its truth."""
    side, other = _one((("left", "right"), ("right", "left")), rng)
    kind = int(rng.integers(4 if family in ("more", "equal") else 3))  # 3: any shape at all
    col = _one(tuple(COLORS), rng) if kind in (1, 2) else None
    shape = _one(SHAPES, rng) if kind in (0, 2) else None
    thing = _a(f"{col or ''} {shape or 'shape'}".strip())
    things = f"{col or ''} {PLURAL[shape] if shape else 'shapes'}".strip()
    count = {"left": _count(left, col, shape), "right": _count(right, col, shape)}
    size = {"left": len(left), "right": len(right)}
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    shapes = "shape" if n == 1 else "shapes"
    if family == "side_has":
        return _one((f"there is {thing} in the {side} image", f"the {side} image contains {thing}"),
                    rng), count[side] > 0
    if family == "both_have":
        return f"both images contain {thing}", min(count.values()) > 0
    if family == "neither":
        return f"neither image contains {thing}", max(count.values()) == 0
    if family == "exactly_one":
        return f"exactly one image contains {thing}", (count["left"] > 0) != (count["right"] > 0)
    if family == "side_count":
        return _one(((f"the {side} image has exactly {n} {shapes}", size[side] == n),
                     (f"the {side} image contains at least {n} {shapes}", size[side] >= n)), rng)
    if family == "more":
        return (f"the {side} image contains more {things} than the {other} image",
                count[side] > count[other])
    if family == "equal":
        return f"both images contain the same number of {things}", count["left"] == count["right"]
    total = int(rng.integers(2 * cfg.min_objects, 2 * cfg.max_objects + 1))  # family "total"
    return f"there are {total} shapes in total", size["left"] + size["right"] == total


def _nlvr2_rows(split: str, scenes: list[list[dict]], n_pairs: int, cfg: WorldConfig,
                rng: np.random.Generator) -> list[dict]:
    """Pairs in couples, as in NLVR2 where every sentence is shown with images of both truths: draw a
    statement (family, then its wording and parameters), then one image pair that makes it true and
    one that makes it false. So the statement's text says nothing about its label (label-first
    sampling let a text-only model reach 62% on 1,000 test pairs), and labels are exactly balanced."""
    names = [*EASY, *HARD]
    w = np.array([v / sum(EASY.values()) * (1 - cfg.nlvr2_hard_share) for v in EASY.values()]
                 + [v / sum(HARD.values()) * cfg.nlvr2_hard_share for v in HARD.values()])
    found: list[tuple[str, bool, int, int]] = []
    misses = 0
    while len(found) < n_pairs:
        family = names[rng.choice(len(names), p=w / w.sum())]
        wording = int(rng.integers(2**63))  # the same wording and parameters for every image pair
        by_label: dict[bool, tuple[str, int, int]] = {}
        for _ in range(200):
            a, b = (int(i) for i in rng.choice(len(scenes), size=2, replace=False))
            statement, label = _statement(family, scenes[a], scenes[b], cfg, np.random.default_rng(wording))
            by_label.setdefault(label, (statement, a, b))
            if len(by_label) == 2:
                found += [(st, label, a, b) for label, (st, a, b) in sorted(by_label.items())]
                break
        else:  # (nearly) always true or always false on these images: draw another statement
            misses += 1
            if misses > 20 * n_pairs + 1000:
                # A degenerate world (e.g. two one-object images) has too few two-sided
                # statements: fill up with one statement per label instead.
                found += _single_rows(n_pairs - len(found), len(found), scenes, names, w, cfg, rng)
    order = rng.permutation(len(found))[:n_pairs]  # an odd count drops one: balanced within one
    return [{"pair_id": f"shapes_{split}_pair_{j:06d}", "left_image_id": _image_id(split, found[k][2]),
             "right_image_id": _image_id(split, found[k][3]), "split": split, "statement": found[k][0],
             "label": found[k][1]} for j, k in enumerate(order)]


def _single_rows(n: int, start: int, scenes, names, w, cfg: WorldConfig,
                 rng: np.random.Generator) -> list[tuple[str, bool, int, int]]:
    """``n`` pairs, each with its own statement, alternating labels from ``start``."""
    out = []
    for j in range(start, start + n):
        target = j % 2 == 0
        for attempt in range(10_000):
            if attempt % 200 == 0:  # this family rarely gives the target label: try another
                family = names[rng.choice(len(names), p=w / w.sum())]
            a, b = (int(i) for i in rng.choice(len(scenes), size=2, replace=False))
            statement, label = _statement(family, scenes[a], scenes[b], cfg, rng)
            if label == target:
                out.append((statement, label, a, b))
                break
        else:
            raise RuntimeError(f"shapes world: no {target} NLVR2 statement found among {len(scenes)} images")
    return out


# ----------------------------------------------------------------------------- the world

def _image_id(split: str, i: int) -> str:
    return f"shapes_{split}_{i:06d}"


def _rng(cfg: WorldConfig, split: str, stream: str) -> np.random.Generator:
    """An independent generator per (seed, split, stream): changing one table's size leaves the
    others' draws unchanged."""
    return np.random.default_rng([cfg.seed, SPLITS.index(split), _STREAMS[stream]])


def _split_rows(split: str, cfg: WorldConfig, rows: dict[str, list]) -> list[list[dict]]:
    """Append one split's images, captions, VQA and GQA rows; return its scenes."""
    rng = {s: _rng(cfg, split, s) for s in _STREAMS}
    seen: dict[str, dict] = {"vqa": {}, "gqa": {}}  # answers given so far, per task and type
    scenes = []
    for i in range(cfg.n_images.get(split, 0)):
        image_id, objs = _image_id(split, i), _sample_scene(cfg, rng["scene"])
        scenes.append(objs)
        ids = {"image_id": image_id, "split": split}
        rows["images"].append({**ids, "image": _render(objs, cfg, rng["scene"]),
                               "scene": json.dumps(objs, sort_keys=True, separators=(",", ":"))})
        captions = _captions(objs, cfg.captions_per_image, cfg.grid, rng["captions"])
        rows["captions"].append({**ids, "captions": captions})
        vqa = _vqa_candidates(objs, cfg.grid, rng["vqa"])
        for q, (qtype, question, answer) in enumerate(
                _pick(vqa, cfg.vqa_per_image, seen["vqa"], rng["vqa"])):
            rows["vqa"].append({**ids, "question_id": f"{image_id}_vqa{q}", "question": question,
                                "question_type": qtype, "answer_type": _answer_type(answer),
                                "answers": _annotate(answer, cfg, rng["vqa"])})
        gqa = _gqa_candidates(objs, cfg.grid, rng["gqa"])
        for q, (family, question, answer) in enumerate(
                _pick(gqa, cfg.gqa_per_image, seen["gqa"], rng["gqa"])):
            rows["gqa"].append({**ids, "question_id": f"{image_id}_gqa{q}", "question": question,
                                "question_type": family, "answer": answer})
    return scenes


def generate_world(cfg: WorldConfig) -> dict[str, pa.Table]:
    """The five canonical tables of the world ``cfg`` describes (splits in train/val/test order)."""
    rows: dict[str, list] = {kind: [] for kind in TABLE_KINDS}
    for split in SPLITS:
        scenes = _split_rows(split, cfg, rows)
        if n_pairs := cfg.nlvr2_pairs.get(split, 0):
            rows["nlvr2"] += _nlvr2_rows(split, scenes, n_pairs, cfg, _rng(cfg, split, "nlvr2"))
    return {kind: pa.table({name: [r[name] for r in rows[kind]] for name in SCHEMAS[kind].names},
                           schema=SCHEMAS[kind]) for kind in TABLE_KINDS}


def world_counts(tables: Mapping[str, pa.Table]) -> dict[str, dict[str, int]]:
    """Rows per table kind and split."""
    return {kind: {s: Counter(t.column("split").to_pylist())[s] for s in SPLITS}
            for kind, t in tables.items()}


def write_world(cfg: WorldConfig, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``<out_dir>/<kind>.arrow`` for every kind, the tables' manifest ``tables.json``, and
    ``<out_dir>/world.json`` (the config, rows per table and split, and each file's sha256) last;
    return the paths by kind (and "world")."""
    tables = generate_world(cfg)
    paths = {kind: write_table(t, table_path(out_dir, kind), kind) for kind, t in tables.items()}
    write_table_manifest(out_dir)
    summary = {"generator": "vltune.data.synthetic", "config": asdict(cfg),
               "counts": world_counts(tables),
               "sha256": {kind: sha256_file(p) for kind, p in paths.items()}}
    paths["world"] = Path(out_dir) / "world.json"
    write_json(paths["world"], summary)
    return paths
