"""Write the walk-through notebooks from the cells below, without outputs.

    .venv/bin/python notebooks/build.py

The notebooks are generated so that their text stays reviewable as Python and the three
share their set-up; edit the cells here and run this script, never the ``.ipynb`` by hand.
``tests/test_notebooks.py`` runs each one top to bottom.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

Cell = tuple[str, str]  # ("md" | "py", source)


def md(text: str) -> Cell:
    return ("md", text.strip("\n"))


def py(text: str) -> Cell:
    return ("py", text.strip("\n"))


WORK = py("""
import tempfile
from pathlib import Path

# Everything this notebook writes goes into WORK, a new temporary folder: running it leaves
# nothing in your checkout. Point WORK at a folder of your own to keep the results.
WORK = Path(tempfile.mkdtemp(prefix="auditor-notebook-"))
print(WORK)
""")

SMALL = md("""
**Small on purpose.** So that this notebook runs in about two minutes on a laptop CPU,
the images are 32 or 48 px, a few hundred of them, and the model trains for a few epochs.
Such a model reads some shapes poorly, so expect a class or two with low accuracy or a
warning that a well-trained model would not give. `make demo` runs the same steps at 64 px
with 1,600 training images and 10 epochs.
A real audit uses your trained model and your labelled images with masks or boxes, at the
model's own input size (224 px for most ImageNet backbones), with at least a few hundred
images per class (below `min_n`, 20, a class is *insufficient data*, never *pass*), on a
GPU where there is one.
""")


AUDIT_A_MODEL = [
    md("""
# Audit a model

Does an image classifier get its classes right for the right reasons? This notebook runs
one audit end to end, as `auditor audit` runs it, and reads the result:

1. make a dataset with a planted shortcut (auditor's lab generates it, with exact object
   masks);
2. train a small model on it;
3. audit the model;
4. read the verdict, the class table (`run.classes`), one class's maps
   (`run.plot_class`), the per-image rows (`run.samples`), and find the HTML report.
"""),
    SMALL,
    WORK,
    md("""
## 1. Data with a planted shortcut

The demo's *shortcut* data: four shapes (circle, square, triangle, cross) on procedural
textures. Circles sit on water and squares on foliage 98% of the time; triangles and
crosses sit on backgrounds that say nothing about the class. The generator writes COCO
annotations (`annotations.json`, with a polygon per object) and PNG images, a `train` and
an `audit` split.
"""),
    py("""
import dataclasses

from auditor.lab.demo import DEMO_MODELS, ensure_dataset

shortcut = DEMO_MODELS[0]
print(shortcut.name, "-", shortcut.description)
# Small and quick (see above); objects drawn large, so that a short training sees them.
spec = dataclasses.replace(
    shortcut.spec, image_size=48, n_train=320, n_audit=160, object_radius=(0.3, 0.42)
)
paths = ensure_dataset(spec, WORK / "data", echo=print)
paths
"""),
    py("""
from PIL import Image

# The first audit images, enlarged: look at the backgrounds of the circles and squares.
side = spec.image_size
files = sorted((paths["audit"].parent / "images").glob("*.png"))[:10]
strip = Image.new("RGB", (side * len(files), side))
for i, file in enumerate(files):
    strip.paste(Image.open(file), (side * i, 0))
strip.resize((strip.width * 2, strip.height * 2), Image.Resampling.NEAREST)
"""),
    md("""
## 2. Train a small model

A torchvision `resnet18` from scratch, on the CPU. `ensure_model` trains it once and
keeps the weights (a `state_dict`) beside the data, keyed by the recipe.
"""),
    py("""
from auditor.lab.demo import ensure_model

model = dataclasses.replace(shortcut, spec=spec)
weights = ensure_model(model, WORK / "data", paths["train"], echo=print, epochs=8, lr=3e-3)
weights
"""),
    md("""
## 3. Audit it

`audit_to_dir` is what `auditor audit` runs; on the command line the same audit is

```bash
auditor audit --model resnet18 --weights WEIGHTS --data annotations.json \\
    --image-size 48 --out reports/my-audit
```

It computes the attribution maps (Grad-CAM and saliency by default), scores how much of
each map falls on the object, moves objects onto other backgrounds and removes them to see
whether the prediction follows, checks that each method is more faithful than a random
map, and judges each class. `pdf=False` skips the PDF (it takes longer to render than this
whole audit); `history=None` keeps this run out of your run history.
"""),
    py("""
from auditor.config import AuditConfig
from auditor.runner.workflow import audit_to_dir

config = AuditConfig(image_size=48, batch_size=64)
run = audit_to_dir(
    "resnet18",
    weights=weights,
    data=paths["audit"],
    out=WORK / "run",
    config=config,
    pdf=False,
    history=None,
    progress=True,
)
"""),
    md("""
## 4. The verdict

`fail` when a class is **flagged** (reliance on something other than the object that the
interventions confirm), `warn` when a class has evidence a reviewer must act on, `pass`
otherwise. A run shows itself as the report's verdict and class table.
"""),
    py("""
print(run.verdict, run.flagged_classes)
run
"""),
    md("""
## 5. The class table as a DataFrame

`run.classes` has one row per class: its status, accuracy, per method the mean
chance-corrected energy `C_<method>` (0: the map is no more on the object than a uniform
map; negative: the background is favoured) with its 95% CI, the accuracy lost when the
object moves onto other backgrounds (`swap_gap`, with its CI), how often the background
alone still gives the class (`background_only`), and the findings, reasons and notes.
"""),
    py("""
classes = run.classes
classes[["name", "status", "n", "accuracy", "C_gradcam", "swap_gap", "background_only"]]
"""),
    py("""
for name, status, reasons in zip(classes["name"], classes["status"], classes["reasons"]):
    print(f"{name}: {status}")
    for reason in reasons:
        print("  -", reason)
"""),
    md("""
## 6. One class's maps

`run.plot_class(name)` draws what the report shows of a class: its mean object mask, the
mean map of each method (object outline in cyan), and exemplar images with each method's
map over them and their C. It returns a matplotlib `Figure`: save it with
`fig.savefig(...)`.
"""),
    py("""
run.plot_class("circle")
"""),
    md("""
## 7. The rows behind the numbers

`run.samples` has one row per audited image and method: ids, label and prediction (class
indices), the scores, the predictions under each intervention, and why an image was
skipped, if it was.
"""),
    py("""
samples = run.samples
gradcam = samples[samples["method"] == "gradcam"]
gradcam.groupby("label")[["correct", "chance_corrected"]].mean()
"""),
    md("""
## 8. Was the audit right?

Only in the lab can we check: each held-out object is drawn again on a background that
identifies no class. A class whose accuracy drops by 30 points or more relies on its
background, measured by intervention, not assumed from how the data was made.
"""),
    py("""
import pandas as pd

from auditor.lab.demo import ground_truth

truth = pd.DataFrame(ground_truth(weights, spec, paths["audit"].parent))
truth["status"] = truth["class"].map(dict(zip(classes["name"], classes["status"])))
truth[["class", "accuracy", "swapped_accuracy", "drop", "background_reliant", "status"]]
"""),
    md("""
The truth moves each object onto backgrounds that identify *no* class. The audit also
moves objects onto *other classes'* backgrounds and removes them: a class that keeps its
accuracy on neutral backgrounds can still lose it on another class's, and then it warns
(read its reasons above) where this truth sees nothing. A flag needs two kinds of
evidence to agree; a warning is for a reviewer to look at.
"""),
    md("""
## 9. The report

The run directory holds `report.html` (self-contained: open it in a browser, offline),
`summary.json` (what `run.summary` reads), `samples.parquet`, `run.json` and
`evidence.pt`. `auditor report DIR` renders the report again without recomputing, and
`auditor.load_run(DIR)` reads the run back into a notebook.
"""),
    py("""
import auditor

print((run.path / "report.html").resolve())
sorted(p.name for p in run.path.iterdir())
"""),
    py("""
again = auditor.load_run(run.path)
again.verdict == run.verdict
"""),
]


DATASET_BIAS = [
    md("""
# Investigate a dataset's bias

A shortcut usually starts in the data: a class photographed mostly on one background, or
marked by a watermark. This notebook looks for it three ways:

1. **the data alone**: how attributes of the images (here, the background and a corner
   mark) go with the labels, and the data probe (`auditor probe-data`): can a classifier
   that never sees the object predict the label from the background?
2. **groups**: an audit of a model with `group_by`, which judges every class within each
   value of an attribute, and measures how strongly label and attribute go together;
3. **subgroups**: images of a class whose attribution maps cluster apart (spectral
   relevance analysis), found without being told of any attribute.
"""),
    SMALL,
    WORK,
    md("""
## 1. A dataset with two biases

Four shapes. Circles sit on water 90% of the time (the other classes' backgrounds say
nothing about them), and 60% of the squares carry a small mark in a corner. Each image's
`attributes` in the COCO file record its background and whether it has the mark, as a
dataset's metadata would (a camera, a site, a source).
"""),
    py("""
import json

import pandas as pd

from auditor.lab.demo import ensure_dataset
from auditor.lab.synthetic import SyntheticSpec

spec = SyntheticSpec(
    classes=("circle", "square", "triangle", "cross"),
    background_strength=(0.9, 0.0, 0.0, 0.0),
    artefact_rate=(0.0, 0.6, 0.0, 0.0),
    artefact="corner",
    image_size=32,
    n_train=320,
    n_audit=160,
    seed=21,
)
paths = ensure_dataset(spec, WORK / "data", echo=print)
"""),
    md("""
## 2. The data alone: attributes against labels

Before any model: read the annotations and cross the labels with the attributes.
"""),
    py("""
coco = json.loads(paths["train"].read_text())
names = {c["id"]: c["name"] for c in coco["categories"]}
label = {a["image_id"]: names[a["category_id"]] for a in coco["annotations"]}
images = pd.DataFrame(
    [{"label": label[i["id"]], **i["attributes"]} for i in coco["images"]]
)
pd.crosstab(images["label"], images["background"])
"""),
    py("""
pd.crosstab(images["label"], images["artefact"])
"""),
    md("""
## 3. The data probe

`probe_to_dir` is what `auditor probe-data` runs:

```bash
auditor probe-data --data train/annotations.json --image-size 32 --out reports/probe
```

Each image gives a *background-only* view (the object's box removed) and an
*object-only* view, each described by fixed features (colour and gradient histograms,
random filters; nothing learned, nothing downloaded). A class-balanced logistic regression
predicts the label from each view with cross-validation. A class is **flagged** when its
background alone predicts it well above chance and above the most similar other class.
Here it reads the training split: the data the model will learn from.
"""),
    py("""
from auditor.detect.probe import ProbeConfig
from auditor.runner.probe import probe_to_dir

probe = probe_to_dir(
    paths["train"], out=WORK / "probe", config=ProbeConfig(image_size=32), pdf=False
)
print("flagged by the probe:", probe["flagged_classes"])
columns = ["name", "status", "n", "background_only_accuracy", "chance", "object_only_accuracy"]
pd.DataFrame(probe["classes"])[columns]
"""),
    py("""
for c in probe["classes"]:
    print(f"{c['name']}: {c['status']}")
    for reason in c.get("reasons", []):
        print("  -", reason)
print("report:", (WORK / "probe" / "data_report.html").resolve())
"""),
    md("""
A flag says the background alone, without the object, identifies the class in this data:
whatever model learns from it may take that route. A pass does not prove the data clean:
the probe's features are fixed and simple, and a small cue (a mark of a few pixels) can
escape them while a model finds it. Whether *this* model uses a cue is what the audit
asks next.

## 4. Train a model and audit it by group

`group_by=("background", "artefact")` judges every class within each value of each
attribute, as `--group-by background --group-by artefact` does on the command line.
"""),
    py("""
from auditor.config import AuditConfig
from auditor.lab.demo import DemoModel, ensure_model
from auditor.runner.workflow import audit_to_dir

biased = DemoModel("biased", "circles on water, marked squares", spec)
weights = ensure_model(biased, WORK / "data", paths["train"], echo=print, epochs=5, lr=3e-3)
config = AuditConfig(image_size=32, batch_size=64, group_by=("background", "artefact"))
run = audit_to_dir(
    "resnet18",
    weights=weights,
    data=paths["audit"],
    out=WORK / "run",
    config=config,
    pdf=False,
    history=None,
    progress=True,
)
print(run.verdict, "flagged:", run.flagged_classes, "flagged groups:", run.summary.flagged_groups)
run.classes[["name", "status", "accuracy", "C_gradcam", "swap_gap", "background_only"]]
"""),
    md("""
## 5. Groups

Per attribute: how strongly label and attribute go together in the audited data
(Cramér's V, with a chi-square or Fisher p: the dataset's bias, apart from the model), the
worst and best judged class x group cell and the accuracy gap between them (the
Waterbirds convention), and every cell's own status.
"""),
    py("""
def number(value, form=".2f"):
    return "n/a" if value is None else format(value, form)


for group in run.summary.groups:
    a = group.association
    p = number(a.p, ".2g")
    print(f"{group.attribute}: Cramér's V {number(a.cramers_v)} (p = {p}, {a.test})")
    for which, cell in (("worst", group.worst_group), ("best", group.best_group)):
        if cell is not None:
            print(f"  {which} cell {cell.class_name} / {cell.value}: "
                  f"{number(cell.accuracy, '.0%')} of {cell.n}")
    print(f"  accuracy gap: {number(group.gap, '.0%')}")
"""),
    py("""
cells = pd.DataFrame(
    [
        {"attribute": g.attribute, "class": c.class_name, "value": c.value, "n": c.n,
         "accuracy": c.accuracy, "status": c.status}
        for g in run.summary.groups
        for c in g.cells
    ]
)
cells[cells["status"] != "insufficient_data"]
"""),
    md("""
`run.samples` carries each image's group as a column `group.<attribute>`, so any other
breakdown is one `groupby` away:
"""),
    py("""
rows = run.samples[run.samples["method"] == "gradcam"]
rows.groupby(["label", "group.artefact"])["correct"].agg(["mean", "size"])
"""),
    md("""
## 6. Subgroups

Per class, the attribution maps of up to 1,000 images are pooled, clustered
(spectral clustering, the number of clusters at the largest eigengap), and each cluster is
judged like a class. No attribute is needed: a subgroup can reveal a cue nobody recorded.
`run.subgroups` has one row per member image; `run.summary` the judgement of each.
"""),
    py("""
for c in run.summary.classes:
    for s in c.subgroups:
        print(f"{c.name} subgroup {s.subgroup} of {s.of}: {s.status}, {s.n} images")
        for reason in s.reasons:
            print("  -", reason)
print("subgroup members:", len(run.subgroups))
"""),
    py("""
if run.subgroups.empty:
    print("No class's maps split into subgroups in this run.")
else:
    # Does a subgroup coincide with an attribute? Join members to the image attributes.
    audit = json.loads(paths["audit"].read_text())
    marks = {str(i["id"]): i["attributes"]["artefact"] for i in audit["images"]}
    members = run.subgroups.assign(artefact=run.subgroups["image_id"].astype(str).map(marks))
    display(pd.crosstab([members["class"], members["subgroup"]], members["artefact"]))
"""),
    py("""
run.plot_class("square")
"""),
    md("""
## Where next

- The HTML report of the audit (groups and subgroups have their own tables, charts and
  mean maps) and of the probe:
"""),
    py("""
print((run.path / "report.html").resolve())
print((WORK / "probe" / "data_report.html").resolve())
"""),
]


COMPARE_RUNS = [
    md("""
# Compare two runs

An audit is most useful over time: after a fix, did the flagged classes get better, and
did anything else get worse? This notebook audits two models on the same images and
compares them, as `auditor compare` does:

1. a model trained on data with a planted background shortcut;
2. the "fix": a model trained on data whose backgrounds say nothing about the class;
3. both audited under one audit name, recorded in a run history, so the second run
   already knows its previous one;
4. the comparison with confidence intervals, and the classes that regressed.
"""),
    SMALL,
    WORK,
    md("""
## 1. Data

The demo's two datasets, small: in the *shortcut* data circles sit on water and squares
on foliage 98% of the time; in the *control* data backgrounds are independent of the
class. Both models are audited on the shortcut data's audit split, the same images, so
the comparison pairs image with image.
"""),
    py("""
import dataclasses

from auditor.lab.demo import DEMO_MODELS, ensure_dataset

small = {"image_size": 48, "n_train": 320, "n_audit": 160, "object_radius": (0.3, 0.42)}
shortcut, control = (dataclasses.replace(m, spec=dataclasses.replace(m.spec, **small))
                     for m in DEMO_MODELS)
data = {m.name: ensure_dataset(m.spec, WORK / m.name, echo=print) for m in (shortcut, control)}
audit_images = data["shortcut"]["audit"]
"""),
    md("""
## 2. Two models

The same recipe on each training set: a `resnet18` from scratch, 8 epochs.
"""),
    py("""
from auditor.lab.demo import ensure_model

weights = {
    m.name: ensure_model(m, WORK / m.name, data[m.name]["train"], echo=print, epochs=8, lr=3e-3)
    for m in (shortcut, control)
}
"""),
    md("""
## 3. Two runs of one audit

`name` ties runs together in the history (`--name` on the command line; by default the
output folder). With `history=...`, each run is recorded, and a run whose audit has an
earlier run is compared with it at once: its summary gains `since_previous`, its report a
section, and `--fail-on-regression` makes the exit code 4 on a regression.
"""),
    py("""
from auditor.config import AuditConfig
from auditor.runner.workflow import audit_to_dir

config = AuditConfig(image_size=48, batch_size=64, name="shapes-classifier")
history = WORK / "history.sqlite"
runs = {}
for name in ("shortcut", "control"):
    runs[name] = audit_to_dir(
        "resnet18",
        weights=weights[name],
        data=audit_images,
        out=WORK / "runs" / name,
        config=config,
        pdf=False,
        history=history,
        progress=True,
    )
    print(name, runs[name].verdict, runs[name].flagged_classes)
"""),
    py("""
import pandas as pd

pd.concat(
    {name: run.classes.set_index("name")[["status", "accuracy", "C_gradcam", "swap_gap"]]
     for name, run in runs.items()},
    axis=1,
)
"""),
    md("""
The history indexes every run (`auditor history` on the command line):
"""),
    py("""
from auditor.history import open_history

book = open_history(history)
for r in book.runs(name="shapes-classifier"):
    print(r.id, r.created, r.verdict, r.flagged_classes, r.run_dir)
book.close()
"""),
    md("""
## 4. The comparison

`compare_to_dir` is what `auditor compare` runs:

```bash
auditor compare RUN_BEFORE RUN_AFTER --out reports/compare
```

Runs are named by folder, by history id, or `latest`/`previous`. Per class it gives the
status before and after, and the change in accuracy, in mean chance-corrected energy C and
in the swap gap, each with a 95% CI (paired image by image when both runs audited the same
data). A class *regressed* when its status got worse or a change is worse beyond the
margin with confidence.
"""),
    py("""
from auditor.report.terminal import compare_lines
from auditor.runner.compare import compare_to_dir

compared = compare_to_dir(
    str(runs["shortcut"].path), str(runs["control"].path), out=WORK / "compare", history=None
)
print("\\n".join(compare_lines(compared.payload, WORK / "compare")))
"""),
    py("""
def change(d):
    return None if d is None else d["change"]


pd.DataFrame(
    [
        {"class": c["name"], "before": c["status_before"], "after": c["status_after"],
         "accuracy": change(c["accuracy"]), "C": change(c["chance_corrected"]),
         "C CI": c["chance_corrected"]["ci95"], "swap gap": change(c["swap_gap"]),
         "regressed": c["regressed"], "why": "; ".join(c["regressions"])}
        for c in compared.payload["classes"]
    ]
)
"""),
    md("""
A fix can cost something: on these audit images the water under the circles helped the
shortcut model, and a model that must recognise the shape may get fewer circles right.
The maps show where each model looks (object outline in cyan): before the fix, and after.
"""),
    py("""
runs["shortcut"].plot_class("circle", exemplars=1)
"""),
    py("""
runs["control"].plot_class("circle", exemplars=1)
"""),
    md("""
The same comparison was made when the second run was written, against the previous run
of its audit in the history:
"""),
    py("""
since = runs["control"].summary.since_previous or {}
print("previous run:", since.get("previous_run", {}).get("run_dir"))
print("regressed:", since.get("regressed_classes"))
"""),
    py("""
print((WORK / "compare" / "compare.html").resolve())
print((runs["control"].path / "report.html").resolve())
"""),
]


NOTEBOOKS = {
    "01_audit_a_model": AUDIT_A_MODEL,
    "02_dataset_bias": DATASET_BIAS,
    "03_compare_runs": COMPARE_RUNS,
}


def notebook(cells: list[Cell], stem: str) -> nbformat.NotebookNode:
    nb = new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        }
    )
    for i, (kind, source) in enumerate(cells):
        make = new_markdown_cell if kind == "md" else new_code_cell
        nb.cells.append(make(source, id=f"{stem.split('_')[0]}-{i:02d}"))
    nbformat.validate(nb)
    return nb


def main() -> None:
    for stem, cells in NOTEBOOKS.items():
        nbformat.write(notebook(cells, stem), HERE / f"{stem}.ipynb")


if __name__ == "__main__":
    main()
