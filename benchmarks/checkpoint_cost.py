"""What resuming costs as an audit grows: the time of one checkpoint save and the memory of
the rows, for the old form (every row as a dict, the whole list pickled at each save) and
the current one (columns per batch; a save writes only the rows since the last one).

    .venv/bin/python benchmarks/checkpoint_cost.py --images 10000 50000

Rows are synthetic but shaped as the pipeline's (the columns of an audit with the core
interventions, two methods per image); both forms are timed in the same run, in a temporary folder.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

from auditor.accumulate import Keyed
from auditor.detect.views import CORE
from auditor.runner.batch import sample_columns
from auditor.runner.checkpoint import Checkpoint, Progress, Rows

COLUMNS = tuple(sample_columns(CORE))

BATCH = 32


def batch_rows(start: int) -> list[dict]:
    rows = []
    for i in range(start, start + BATCH):
        for method in ("gradcam", "saliency"):
            row = {c: i / 7 for c in COLUMNS}
            row.update(sample=i, image_id=str(i), file_name=f"{i:06d}.jpg", label=i % 10,
                       label_name=f"class{i % 10}", prediction=(i * 7) % 10,
                       correct=i % 3 != 0, method=method, donor_label=i % 10,
                       pred_swapped=i % 10, pred_background_only=i % 10,
                       pred_object_only=i % 10, skip_reason=None, skip_detail=None,
                       pointing_game=math.nan if i % 11 == 0 else 1.0)  # fmt: skip
            rows.append(row)
    return rows


def measure(n_images: int, folder: Path) -> dict[str, float]:
    batches = n_images // BATCH
    tracemalloc.start()
    dicts: list[dict] = []
    for b in range(batches):
        dicts += batch_rows(b * BATCH)
    dict_mb = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    started = time.perf_counter()
    torch.save({"rows": dicts}, folder / "old.pt")
    old_save = time.perf_counter() - started
    del dicts

    tracemalloc.start()
    rows = Rows(COLUMNS)
    for b in range(batches):
        rows.update(batch_rows(b * BATCH))
    python_mb = tracemalloc.get_traced_memory()[0] / 2**20  # tensors' storage is not traced
    tracemalloc.stop()
    tensor_bytes = sum(t.numel() * t.element_size() for c in rows.chunks for t in c.values()
                       if isinstance(t, torch.Tensor))  # fmt: skip
    column_mb = python_mb + tensor_bytes / 2**20
    saver = Checkpoint(folder / ".partial.pt", {"model": "m"})
    progress = Progress(Rows(rows.columns, rows.chunks[:-30]), Keyed(), done=0)
    saver.maybe_save(progress, force=True)  # everything but the last 30 batches
    progress.rows.chunks = rows.chunks  # 30 more batches (960 images) arrive
    started = time.perf_counter()
    saver.maybe_save(progress, force=True)
    new_save = time.perf_counter() - started
    return {"images": n_images, "rows": 2 * batches * BATCH, "dict_rows_mb": round(dict_mb),
            "columnar_mb": round(column_mb), "old_save_s": round(old_save, 2),
            "new_save_s": round(new_save, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10000, 50000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.images:
            print(measure(n, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
