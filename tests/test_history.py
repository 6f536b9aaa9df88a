"""Scheduled audits: the run history, comparison between runs, regression gates, reuse of
unchanged inputs, locks between processes, and runs killed at any moment."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from catalogue import report_of
from click.testing import CliRunner

from auditor.cli import cli
from auditor.lab.synthetic import SyntheticSpec, sample_scenes, write_coco

pytestmark = pytest.mark.usefixtures("one_thread")
COLOURS = [(230, 30, 30), (30, 200, 30), (40, 40, 230), (230, 30, 230)]
MODEL = ["--model", "planted:background_reader", "--image-size", "32", "--no-pdf"]


@pytest.fixture(scope="module")
def coloured(tmp_path_factory) -> Path:
    """160 images, each class on its own background and in its own colour: a model can read
    either the object (right) or the background (a shortcut)."""
    spec = SyntheticSpec(background_strength=(1.0,) * 4, image_size=32, n_train=4, n_audit=160,
                         seed=7)  # fmt: skip
    scenes = [
        dataclasses.replace(s, color=COLOURS[s.label]) for s in sample_scenes(spec, 160, seed=7)
    ]
    return write_coco(scenes, spec, tmp_path_factory.mktemp("coloured"))


@pytest.fixture(scope="module")
def weights(coloured, tmp_path_factory) -> dict[str, Path]:
    """The same network fitted to the objects' colours (clean) or the backgrounds' (shortcut)."""
    from planted import fit_background_reader, fit_object_reader

    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name, fit in (("clean", fit_object_reader), ("shortcut", fit_background_reader)):
        paths[name] = folder / f"{name}.pt"
        torch.save(fit(coloured, image_size=32).state_dict(), paths[name])
    return paths


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def audit(data: Path, weights: Path, out: Path, history: Path, *extra: str):
    return invoke("audit", *MODEL, "--weights", weights, "--data", data, "--out", out,
                  "--history", history, *extra)  # fmt: skip


@pytest.fixture(scope="module")
def three_runs(coloured, weights, tmp_path_factory):
    """A clean model, then one with a shortcut, then the clean one again, each gated; each
    in its own folder, so one --name makes them one audit."""
    root = tmp_path_factory.mktemp("three")
    history = root / "history.sqlite"
    gate = ("--fail-on-regression", "--name", "nightly")
    models = ("clean", "shortcut", "clean")
    results = [audit(coloured, weights[m], root / f"run{i}", history, *gate)
               for i, m in enumerate(models)]  # fmt: skip
    return root, history, results


@pytest.mark.slow
def test_a_regression_exits_4_and_the_recovery_0(three_runs):
    _, _, results = three_runs
    assert [r.exit_code for r in results] == [0, 4, 0], [r.output for r in results]
    assert "Regressed since run 1: circle" in results[1].output
    assert "Regressed" not in results[2].output


def test_history_lists_the_runs_newest_first(three_runs):
    _, history, _ = three_runs
    result = invoke("history", "--history", history, "--json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)
    assert [r["id"] for r in runs] == [3, 2, 1]
    assert [r["verdict"] for r in runs][1] == "fail" and "circle" in runs[1]["flagged_classes"]
    assert runs[0]["model_sha256"] == runs[2]["model_sha256"] != runs[1]["model_sha256"]
    assert all(r["present"] and r["data_sha256"] == runs[0]["data_sha256"] for r in runs)
    table = invoke("history", "--history", history, "--last", "2", "--class", "circle")
    assert table.exit_code == 0 and len(table.output.strip().splitlines()) == 3  # head + 2
    sha = runs[1]["model_sha256"][:10]
    only = json.loads(invoke("history", "--history", history, "--model", sha, "--json").output)
    assert [r["id"] for r in only] == [2]


def test_compare_shows_the_class_that_became_flagged_and_recovered(three_runs):
    root, history, _ = three_runs
    worse = invoke("compare", "1", "2", "--history", history, "--out", root / "c12",
                   "--fail-on-regression")  # fmt: skip
    assert worse.exit_code == 4, worse.output
    payload = json.loads((root / "c12" / "compare.json").read_text())
    circle = next(c for c in payload["classes"] if c["name"] == "circle")
    assert (circle["status_before"], circle["status_after"]) == ("pass", "flag")
    assert circle["regressed"] and "status" in circle["regressions"]
    low, high = circle["chance_corrected"]["ci95"]
    assert low <= circle["chance_corrected"]["change"] <= high < 0 and payload["paired"]
    better = invoke("compare", "previous", "latest", "--history", history, "--out", root / "c23",
                    "--fail-on-regression")  # fmt: skip
    assert better.exit_code == 0, better.output
    assert "flag -> pass" in " ".join(better.output.split()) and "REGRESSED" not in better.output
    html = (root / "c23" / "compare.html").read_text()
    assert "NO REGRESSION" in html and "http://" not in html.replace("http://www.w3.org", "")


def test_the_report_says_what_changed_since_the_previous_run(three_runs):
    root, _, _ = three_runs
    summary = json.loads((root / "run1" / "summary.json").read_text())
    since = summary["since_previous"]
    assert since["previous_run"]["id"] == 1 and "circle" in since["regressed_classes"]
    assert [p["id"] for p in since["trends"]["circle"]] == [1, "now"]
    shown = report_of(root / "run1")["since"]
    assert shown["error"] is None and "circle" in {r["name"] for r in shown["rows"]}
    assert {"name": "circle", "runs": 2} in [
        {k: t[k] for k in ("name", "runs")} for t in shown["trends"]
    ]
    assert "since_previous" not in json.loads((root / "run0" / "summary.json").read_text()) or (
        json.loads((root / "run0" / "summary.json").read_text())["since_previous"] is None
    )


def test_paired_differences_match_a_hand_computation(three_runs):
    from auditor.run import load_run
    from auditor.runner.compare import compare_runs

    root, _, _ = three_runs
    before, after = load_run(root / "run0"), load_run(root / "run1")
    change = next(c for c in compare_runs(before, after, margin=0.05).comparison.classes
                  if c.name == "circle")  # fmt: skip
    rows = {}
    for name, run in (("a", before), ("b", after)):
        s = run.samples
        s = s[(s["label"] == 0) & (s["method"] == "gradcam")].set_index("image_id")
        rows[name] = s["chance_corrected"]
    assert change.c.change == pytest.approx((rows["b"] - rows["a"]).mean())
    assert change.c.n_before == change.c.n_after == 40


@pytest.mark.slow
def test_unchanged_inputs_reuse_the_run_unless_forced(coloured, weights, tmp_path):
    out, history = tmp_path / "out", tmp_path / "history.sqlite"
    assert audit(coloured, weights["clean"], out, history).exit_code == 0
    created = json.loads((out / "run.json").read_text())["created"]
    samples = (out / "samples.parquet").stat().st_mtime_ns
    again = audit(coloured, weights["clean"], out, history)
    assert again.exit_code == 0 and "Inputs unchanged" in again.output
    assert (out / "samples.parquet").stat().st_mtime_ns == samples
    assert json.loads((out / "run.json").read_text())["created"] == created
    forced = audit(coloured, weights["clean"], out, history, "--force")
    assert forced.exit_code == 0 and "Inputs unchanged" not in forced.output
    assert json.loads((out / "run.json").read_text())["created"] != created or (
        (out / "samples.parquet").stat().st_mtime_ns != samples
    )
    import shutil

    copy = tmp_path / "copy"  # the same files (copytree keeps sizes and times) elsewhere
    shutil.copytree(coloured.parent, copy)
    moved = audit(coloured, weights["clean"], out, history, "--images", copy)
    assert moved.exit_code == 0 and "Inputs unchanged" not in moved.output  # another folder
    other = audit(coloured, weights["clean"], out, history, "--methods", "saliency")
    assert "Inputs unchanged" not in other.output  # other settings: audited afresh
    runs = json.loads(invoke("history", "--history", history, "--json").output)
    assert [r["reused"] for r in runs] == [False, False, False, True, False]
    assert [r["present"] for r in runs] == [True, False, False, False, False]  # one folder


def _audit_process(data: Path, weights: Path, out: Path, history: Path, patch: str = ""):
    """``auditor audit`` in a process of its own, with ``patch`` run first (to kill it)."""
    args = ["audit", *MODEL, "--weights", str(weights), "--data", str(data), "--out", str(out),
            "--history", str(history), "--batch-size", "20"]  # fmt: skip
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        {textwrap.indent(textwrap.dedent(patch), "        ").strip()}
        from auditor.cli import main
        sys.argv = ["auditor", *{args!r}]
        main()
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


@pytest.mark.slow
def test_two_audits_sharing_a_history_both_land(coloured, weights, tmp_path):
    history = tmp_path / "history.sqlite"
    procs = [_audit_process(coloured, weights[n], tmp_path / n, history)
             for n in ("clean", "shortcut")]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    with sqlite3.connect(history) as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM class_results").fetchone()[0] == 2 * 4 * 2


@pytest.mark.slow
def test_two_audits_into_one_folder_one_runs_the_other_is_refused(coloured, weights, tmp_path):
    slow = """
        import auditor.runner.pipeline as p, time
        real = p.audit_batch
        def audit_batch(*a, **k):
            time.sleep(0.5)
            return real(*a, **k)
        p.audit_batch = audit_batch
    """
    out, history = tmp_path / "out", tmp_path / "history.sqlite"
    procs = [_audit_process(coloured, weights["clean"], out, history, slow) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outputs
    refused = next(err for (_, err), p in zip(outputs, procs) if p.returncode == 1)
    assert "another auditor process is using this run directory" in refused
    assert len(refused.strip().splitlines()) == 1 and "Traceback" not in refused


KILL_POINTS = {
    "while auditing": """
        import auditor.runner.pipeline as p
        real, seen = p.audit_batch, []
        def audit_batch(*a, **k):
            seen.append(1)
            if len(seen) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        p.audit_batch = audit_batch
    """,
    "after the old files went": """
        import auditor.run as r
        real = r.atomic_write
        def atomic_write(path, payload):
            if path.name == "report.html":  # the first file after the earlier run's went
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, payload)
        r.atomic_write = atomic_write
    """,
    "between two files": """
        import auditor.run as r
        real = r.atomic_write
        def atomic_write(path, payload):
            if path.name == "samples.parquet":
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, payload)
        r.atomic_write = atomic_write
    """,
    "before the marker went": """
        import auditor.run as r
        r.mark_complete = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    """,
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_leaves_the_previous_run_or_a_marked_resumable_one(
    point, coloured, weights, tmp_path
):
    out, history = tmp_path / "out", tmp_path / "history.sqlite"
    assert audit(coloured, weights["clean"], out, history).exit_code == 0
    previous = json.loads((out / "summary.json").read_text())
    killed = _audit_process(coloured, weights["shortcut"], out, history, KILL_POINTS[point])
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    report = invoke("report", out)
    compare = invoke("compare", out, out, "--out", tmp_path / "cmp")
    if (out / "INCOMPLETE").exists():
        for result in (report, compare):
            assert result.exit_code == 1 and "incomplete run" in result.output
    else:  # killed before any final file was touched: the previous run, whole
        assert point == "while auditing"  # (a checkpoint, if 30 s had passed, in .partial.pt)
        assert report.exit_code == 0 and compare.exit_code == 0, report.output + compare.output
        assert json.loads((out / "summary.json").read_text()) == previous
    for name in ("summary.json", "run.json", "samples.parquet"):  # no half-written file
        if (out / name).exists() and name.endswith(".json"):
            json.loads((out / name).read_text())
    if (out / "samples.parquet").exists():
        pd.read_parquet(out / "samples.parquet")
    finished = audit(coloured, weights["shortcut"], out, history)
    assert finished.exit_code == 0, finished.output
    assert not (out / "INCOMPLETE").exists() and not (out / ".partial.pt").exists()
    assert json.loads((out / "summary.json").read_text())["verdict"] == "fail"


@pytest.mark.slow
def test_bad_history_and_runs_are_one_line(coloured, weights, three_runs, tmp_path):
    root, history, _ = three_runs
    not_sqlite = tmp_path / "h.sqlite"
    not_sqlite.write_text("this is not a database, " * 100)
    result = invoke("history", "--history", not_sqlite)
    assert result.exit_code == 1 and "not a run history" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    audited = invoke("audit", *MODEL, "--weights", weights["clean"], "--data", coloured, "--out",
                     tmp_path / "o", "--history", not_sqlite)  # fmt: skip
    assert audited.exit_code == 5, audited.output  # the run is written all the same
    errors = [line for line in audited.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "not a run history" in errors[0], audited.output
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["history"]["error"]
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    result = invoke("history", "--history", newer)
    assert result.exit_code == 1 and "written by a newer auditor" in result.output
    missing = invoke("history", "--history", tmp_path / "none.sqlite")
    assert missing.exit_code == 1 and "no run history" in missing.output
    old = tmp_path / "old-run"
    old.mkdir()
    for name in ("summary.json", "run.json", "evidence.pt"):
        (old / name).write_bytes((root / "run0" / name).read_bytes())
    samples = pd.read_parquet(root / "run0" / "samples.parquet").drop(columns=["correct"])
    samples.to_parquet(old / "samples.parquet")
    result = invoke("compare", old, root / "run1", "--out", tmp_path / "c")
    assert result.exit_code == 1 and "column(s) correct missing" in result.output
    unknown = invoke("compare", "nowhere", root / "run1", "--history", history)
    assert unknown.exit_code == 1 and "not a run directory, a history id" in unknown.output


def test_runs_of_different_classes_compare_the_common_ones(three_runs, tmp_path):
    root, _, _ = three_runs
    other = tmp_path / "other"
    other.mkdir()
    for name in ("run.json", "samples.parquet", "evidence.pt"):
        (other / name).write_bytes((root / "run1" / name).read_bytes())
    summary = json.loads((root / "run1" / "summary.json").read_text())
    summary["classes"][3]["name"] = "hexagon"
    (other / "summary.json").write_text(json.dumps(summary))
    result = invoke("compare", root / "run0", other, "--out", tmp_path / "c")
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert [c["name"] for c in payload["classes"]] == ["circle", "square", "triangle"]
    assert payload["only_before"] == ["star"] and payload["only_after"] == ["hexagon"]
    assert "only before: star" in result.output


def test_a_history_opens_again_and_migrations_run_once(tmp_path):
    from auditor.history import MIGRATIONS, SCHEMA_VERSION, open_history

    path = tmp_path / "h.sqlite"
    for _ in range(2):
        book = open_history(path)
        assert book.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        book.close()
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 1


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    """Another dataset of the same classes (other scenes, other seed)."""
    spec = SyntheticSpec(background_strength=(1.0,) * 4, image_size=32, n_train=4, n_audit=160,
                         seed=8)  # fmt: skip
    scenes = [
        dataclasses.replace(s, color=COLOURS[s.label]) for s in sample_scenes(spec, 160, seed=8)
    ]
    return write_coco(scenes, spec, tmp_path_factory.mktemp("other"))


@pytest.mark.slow
def test_two_audits_of_one_model_on_two_datasets_never_compare(
    coloured, other_data, weights, tmp_path, monkeypatch
):
    """Run from one folder with the default history, as a team would: each audit's name is
    its run directory, so each run's previous is its own audit's, never the other's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUDITOR_HISTORY")  # the tests' shared history: this test wants the default
    runs = [("birds", coloured), ("cars", other_data), ("birds", coloured)]
    for out, data in runs:
        result = invoke("audit", *MODEL, "--weights", weights["clean"], "--data", data,
                        "--out", f"reports/{out}", "--force")  # fmt: skip
        assert result.exit_code == 0, result.output
        if out == "cars":
            cars = json.loads(Path("reports/cars/summary.json").read_text())
    birds = json.loads(Path("reports/birds/summary.json").read_text())
    assert cars.get("since_previous") is None  # a newer run of the same model exists: birds 1
    assert birds["since_previous"]["previous_run"]["id"] == 1  # not 2, the newer cars run
    assert birds["since_previous"]["previous_run"]["name"] == str(tmp_path / "reports/birds")
    listed = json.loads(invoke("history", "--name", str(tmp_path / "reports/cars"),
                               "--json").output)  # fmt: skip
    assert [r["id"] for r in listed] == [2]
    assert json.loads(Path("reports/cars/run.json").read_text())["name"].endswith("reports/cars")
    named = invoke(
        "audit",
        *MODEL,
        "--weights",
        weights["clean"],
        "--data",
        other_data,
        "--out",
        "reports/cars-again",
        "--name",
        str(tmp_path / "reports/cars"),
    )
    assert named.exit_code == 0, named.output  # the name, not the folder, makes the audit
    again = json.loads(Path("reports/cars-again/summary.json").read_text())
    assert again["since_previous"]["previous_run"]["id"] == 2


def _version_1_history(path: Path, run_dirs: list[Path]) -> None:
    """A history as the release before names wrote it (schema 1), one run per folder."""
    from auditor.history import MIGRATIONS

    db = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    for i, folder in enumerate(run_dirs, start=1):
        db.execute(
            "INSERT INTO runs (created, recorded, model_name, data_spec, auditor_version, "
            "verdict, flagged_classes, run_dir) VALUES (?, ?, 'resnet18', 'data.json', '0.1.0', "
            "'pass', '[]', ?)",
            (f"2026-01-0{i}T00:00:00+00:00", f"2026-01-0{i}T00:00:00+00:00", str(folder)),
        )
        db.execute(
            "INSERT INTO class_results (run_id, class, method, status, n, c) "
            "VALUES (?, 'circle', 'gradcam', 'pass', 40, ?)",
            (i, 0.1 * i),
        )
    db.close()


def test_an_old_history_migrates_and_its_runs_are_named_by_their_folder(tmp_path):
    from auditor.history import SCHEMA_VERSION, audit_name, open_history

    path = tmp_path / "h.sqlite"
    nightly, adhoc = tmp_path / "reports" / "nightly", tmp_path / "reports" / "adhoc"
    _version_1_history(path, [nightly, adhoc, nightly])
    book = open_history(path)
    try:
        assert book.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        runs = book.runs()
        assert [(r.id, r.name, r.model_name) for r in runs] == [
            (3, str(nightly), "resnet18"), (2, str(adhoc), "resnet18"),
            (1, str(nightly), "resnet18"),
        ]  # fmt: skip
        assert audit_name(None, nightly) == str(nightly)  # a new run there is the same audit
        assert [r.id for r in book.runs(name=str(nightly))] == [3, 1]
        trend = book.trend(str(nightly), "circle", "gradcam", last=5)
        assert [(p["id"], p["c"]) for p in trend] == [(1, pytest.approx(0.1)),
                                                       (3, pytest.approx(0.3))]  # fmt: skip
        assert book.names() == [str(nightly), str(adhoc)]
    finally:
        book.close()
    listed = invoke("history", "--history", path, "--name", str(adhoc), "--json")
    assert listed.exit_code == 0 and [r["id"] for r in json.loads(listed.output)] == [2]


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_notice(tmp_path, caplog):
    from auditor.rundir import LOCK_NAME, RunLock

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "h", "since": "t",
                                                  "purpose": "auditor audit"}))  # fmt: skip
    with caplog.at_level("WARNING"), RunLock(tmp_path, purpose="auditor audit"):
        pass
    assert "taking over the lock left by auditor audit by pid 999999" in caplog.text
    with caplog.at_level("WARNING"), RunLock(tmp_path, purpose="auditor audit"):
        pass  # released properly the first time: no notice now
    assert caplog.text.count("taking over") == 1


def _page_links(html: str) -> list[str]:
    """Every src and href of a page, and every url() of its style."""
    import re
    from html.parser import HTMLParser

    found: list[str] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(v for k, v in attrs if k in ("src", "href") and v is not None)

    Links().feed(html)
    return found + re.findall(r"url\(([^)]*)\)", html)


@pytest.mark.slow
def test_the_run_browser_shows_each_audits_runs_statuses_and_trends(three_runs, tmp_path):
    from urllib.parse import unquote

    root, history, _ = three_runs
    page_dir = tmp_path / "browse"
    result = invoke("history", "--history", history, "--html", page_dir)
    assert result.exit_code == 0, result.output
    html = (page_dir / "index.html").read_text()
    assert '<meta name="auditor-audits" content="1">' in html and "1 audit, 3 runs" in html
    assert [f"<td>#{i}</td>" in html for i in (1, 2, 3)] == [True] * 3 and "nightly" in html
    circle = re.search(r"<tr><td>circle</td>(.*?)</tr>", html, re.S)
    assert circle is not None
    assert re.findall(r'class="cell-(\w+)"', circle.group(1)) == ["pass", "flag", "pass"]
    assert html.count('src="data:image/svg+xml') == 4  # one trend chart per class
    links = [link for link in _page_links(html) if not link.startswith(("data:", "#"))]
    assert sorted(link for link in links if link.endswith("report.html")) == sorted(
        f"../{Path(os.path.relpath(root, tmp_path)).as_posix()}/run{i}/report.html"
        for i in range(3)
    )
    assert sorted(link for link in links if "compare" in link) == [
        "compare/1-2/compare.html", "compare/2-3/compare.html"
    ]  # fmt: skip
    assert all((page_dir / unquote(link)).is_file() for link in links), links
    assert "REGRESSED" in (page_dir / "compare/1-2/compare.html").read_text()
    only = invoke("history", "--history", history, "--html", tmp_path / "none", "--name", "x")
    assert (
        only.exit_code == 0
        and "no run of the audit x" in (tmp_path / "none" / "index.html").read_text()
    )


BROWSER = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           '--host-resolver-rules=MAP * ~NOTFOUND']  # fmt: skip


def _open_page(page: Path, netlog: Path) -> tuple[list[str], str]:
    """The URLs a page asks the network for when Chromium opens it, and its DOM. From the
    network log: requests the page starts carry its origin; Chromium's own background
    requests do not."""
    dom = subprocess.run(
        [*BROWSER, f"--log-net-log={netlog}", "--dump-dom", page.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    text = netlog.read_text()
    try:
        log = json.loads(text)
    except ValueError:  # a log whose browser stopped before closing it
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    starts = [e.get("params", {}) for e in log["events"] if e["type"] == start]
    asked = [p["url"] for p in starts if "url" in p and p.get("initiator") != "not an origin"]
    return asked, dom


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (.ci/run installs it)")
def test_the_run_browser_opens_offline_in_a_browser_and_draws_its_charts(three_runs, tmp_path):
    """Headless Chromium opens the page: it asks the network for nothing (a page with one
    outside image, the control, is caught asking), and its charts are drawn."""
    import numpy as np
    from PIL import Image

    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="https://example.org/x.png"></body></html>')
    assert _open_page(control, tmp_path / "control.json")[0] == ["https://example.org/x.png"]
    _, history, _ = three_runs
    page_dir = tmp_path / "browse"
    assert invoke("history", "--history", history, "--html", page_dir).exit_code == 0
    page = (page_dir / "index.html").resolve()
    asked, dom = _open_page(page, tmp_path / "net.json")
    assert asked == [] and dom.count('class="trend"') == 4 and "nightly" in dom
    shot = tmp_path / "page.png"
    subprocess.run([*BROWSER, f"--screenshot={shot}", "--window-size=1100,2600", page.as_uri()],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    lines = (abs(pixels - (74, 111, 165)).sum(axis=2) < 40).sum()  # the charts' C lines
    assert lines > 200, "no trend line drawn"
