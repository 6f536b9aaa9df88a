"""The catalogue of bad places to write, through the CLI: a folder of a user's files, planted
lock links, a history that is locked, read-only or damaged, a full disk. For each, the exit
code, no traceback, the file named in one line, and nothing of the user's changed."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from catalogue import invoke, notices, report_of
from click.testing import Result

pytestmark = pytest.mark.usefixtures("one_thread")


def audit(data: Path, weights: Path, out: Path, *args: object) -> Result:
    return invoke("audit", "--model", "resnet18", "--weights", weights, "--data", data,
                  "--out", out, "--image-size", 32, "--no-pdf", "--methods", "saliency",
                  *args)  # fmt: skip


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every entry under ``folder`` (links not followed): its bytes (or link target) and
    modification time."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = (os.readlink(path).encode(), 0)
        elif path.is_file():
            found[str(path.relative_to(folder))] = (path.read_bytes(), path.stat().st_mtime_ns)
        else:
            found[str(path.relative_to(folder))] = (b"<dir>", 0)
    return found


@pytest.fixture
def users_folder(tmp_path) -> Path:
    """A folder of someone's files, two of them named as auditor's."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "report.pdf").write_text("my thesis")
    (folder / "summary.json").write_text('{"mine": true}')
    (folder / "notes.txt").write_text("do not touch")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.csv").write_text("a,b\n")
    return folder


# ---- never touch what auditor did not write -------------------------------------------------


def test_an_audit_into_a_folder_of_user_files_changes_nothing(
    users_folder, coco_dataset, resnet_weights, tmp_path
):
    before = snapshot(users_folder)
    result = audit(coco_dataset, resnet_weights, users_folder)
    assert result.exit_code == 1, result.output
    assert str(users_folder) in result.output and "report.pdf" in result.output
    assert "did not write" in result.output
    link = tmp_path / "link-to-mine"
    link.symlink_to(users_folder)
    through_link = audit(coco_dataset, resnet_weights, link)
    assert through_link.exit_code == 1 and "did not write" in through_link.output
    assert snapshot(users_folder) == before  # no file replaced, deleted or added (no .lock)


@pytest.mark.slow
def test_the_other_writers_refuse_a_folder_of_user_files(
    users_folder, coco_dataset, resnet_weights, tmp_path
):
    before = snapshot(users_folder)
    run = tmp_path / "run"
    assert audit(coco_dataset, resnet_weights, run).exit_code == 0
    compared = invoke("compare", run, run, "--out", users_folder)
    assert compared.exit_code == 1 and "did not write" in compared.output
    probed = invoke("probe-data", "--data", coco_dataset, "--out", users_folder, "--no-pdf")
    assert probed.exit_code == 1 and "did not write" in probed.output
    rendered = invoke("report", users_folder, "--no-pdf")
    assert rendered.exit_code == 1 and "not an audit run directory" in rendered.output
    assert snapshot(users_folder) == before


def test_root_and_home_are_refused_before_anything_is_written(coco_dataset, resnet_weights):
    for folder in (Path("/"), Path.home()):
        if not any(folder.iterdir()):
            continue
        before = {p.name for p in folder.iterdir()}
        result = audit(coco_dataset, resnet_weights, folder)
        assert result.exit_code == 1 and "did not write" in result.output, result.output
        assert {p.name for p in folder.iterdir()} == before


@pytest.mark.slow
def test_an_earlier_run_is_replaced_and_other_kinds_of_output_are_refused(
    coco_dataset, resnet_weights, tmp_path
):
    out = tmp_path / "run"
    assert audit(coco_dataset, resnet_weights, out).exit_code == 0
    (out / ".auditor.json").unlink()  # as an earlier auditor version left it: run.json says
    (out / "notes.md").write_text("my notes on the run")
    again = audit(coco_dataset, resnet_weights, out, "--force")
    assert again.exit_code == 0, again.output
    assert (out / "notes.md").read_text() == "my notes on the run"  # beside a run, kept
    assert json.loads((out / ".auditor.json").read_text())["kind"] == "audit"
    probe = tmp_path / "probe"
    assert invoke("probe-data", "--data", coco_dataset, "--out", probe, "--no-pdf").exit_code == 0
    into_probe = audit(coco_dataset, resnet_weights, probe)
    assert into_probe.exit_code == 1 and "output of auditor probe-data" in into_probe.output


@pytest.mark.slow
def test_an_interrupted_first_run_resumes_into_its_own_folder(
    coco_dataset, resnet_weights, tmp_path
):
    """A folder holding only auditor's bookkeeping (lock, checkpoint) is auditor's."""
    out = tmp_path / "run"
    out.mkdir()
    for name in (".lock", ".partial.pt", ".partial.rows-00001.pt", "INCOMPLETE"):
        (out / name).write_bytes(b"")
    assert audit(coco_dataset, resnet_weights, out).exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("command", ["audit", "report"])
def test_a_planted_lock_link_is_refused_and_its_target_unchanged(
    command, coco_dataset, resnet_weights, tmp_path
):
    out = tmp_path / "run"
    assert audit(coco_dataset, resnet_weights, out).exit_code == 0
    target = tmp_path / "precious.txt"
    target.write_text("precious contents")
    for plant, words in ((Path.symlink_to, "symbolic link"), (Path.hardlink_to, "hard links")):
        (out / ".lock").unlink()
        plant(out / ".lock", target)
        if command == "audit":
            result = audit(coco_dataset, resnet_weights, out, "--force")
        else:
            result = invoke("report", out, "--no-pdf")
        assert result.exit_code == 1 and str(out / ".lock") in result.output, result.output
        assert words in result.output
        assert target.read_text() == "precious contents"


@pytest.mark.slow
def test_a_link_at_a_final_name_is_replaced_never_written_through(
    coco_dataset, resnet_weights, tmp_path
):
    out = tmp_path / "run"
    assert audit(coco_dataset, resnet_weights, out).exit_code == 0
    target = tmp_path / "precious.txt"
    target.write_text("precious contents")
    (out / "summary.json").unlink()
    (out / "summary.json").symlink_to(target)
    assert audit(coco_dataset, resnet_weights, out, "--force").exit_code == 0
    assert target.read_text() == "precious contents"
    assert not (out / "summary.json").is_symlink()


@pytest.mark.slow
def test_junit_xml_or_history_at_a_file_of_the_run_is_a_usage_error(
    coco_dataset, resnet_weights, tmp_path
):
    out = tmp_path / "run"
    assert audit(coco_dataset, resnet_weights, out).exit_code == 0
    summary = (out / "summary.json").read_bytes()
    for option in ("--junit-xml", "--history"):
        result = audit(coco_dataset, resnet_weights, out, option, out / "summary.json")
        assert result.exit_code == 2 and option in result.output and "summary.json" in result.output
    assert (out / "summary.json").read_bytes() == summary


# ---- the history never costs the run --------------------------------------------------------


@pytest.fixture
def history(coco_dataset, resnet_weights, tmp_path) -> Path:
    """A history with one run in it, of the audit the tests then run again into ``out``."""
    path = tmp_path / "history.sqlite"
    first = audit(coco_dataset, resnet_weights, tmp_path / "first", "--history", path,
                  "--name", str(tmp_path / "out"))  # fmt: skip
    assert first.exit_code == 0, first.output
    return path


def expect_run_without_history(result: Result, out: Path, *words: str) -> None:
    """Exit 5, one error line naming the history and saying why, and a complete run whose
    summary and report say the history failed."""
    assert result.exit_code == 5, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert not (out / "INCOMPLETE").exists() and not (out / ".partial.pt").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["history"]["error"] and summary["dataset"]["n_scored"] == 48
    assert notices(out) == ["history"]
    assert invoke("report", out, "--no-pdf").exit_code == 0


@pytest.mark.slow
def test_a_damaged_history_keeps_the_run(history, coco_dataset, resnet_weights, tmp_path):
    blob = bytearray(history.read_bytes())
    for i in range(4096, len(blob), 7):  # every page but the header
        blob[i] = 0xAB
    history.write_bytes(bytes(blob))
    out = tmp_path / "out"
    result = audit(coco_dataset, resnet_weights, out, "--history", history)
    expect_run_without_history(result, out, str(history), "damaged")


@pytest.mark.slow
def test_a_locked_history_is_said_to_be_locked(
    history, coco_dataset, resnet_weights, tmp_path, monkeypatch
):
    monkeypatch.setattr("auditor.history.BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(history, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        out = tmp_path / "out"
        result = audit(coco_dataset, resnet_weights, out, "--history", history)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    expect_run_without_history(result, out, str(history), "locked by another process")
    assert "not a run history" not in result.output


@pytest.mark.slow
def test_a_history_that_fails_only_when_recording_keeps_the_run(
    history, coco_dataset, resnet_weights, tmp_path
):
    """Read-only: opened and read, then refused at the write, after the run was written."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    made = subprocess.run(["chattr", "+i", str(history)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a file immutable here: {made.stderr.decode().strip()}")
    try:
        out = tmp_path / "out"
        result = audit(coco_dataset, resnet_weights, out, "--history", history)
    finally:
        subprocess.run(["chattr", "-i", str(history)], check=True)
    expect_run_without_history(result, out, str(history), "read-only")
    since = report_of(out)["since"]
    assert since is not None and since["error"] is None  # it was read and compared


@pytest.mark.slow
def test_history_and_compare_name_a_locked_history(history, tmp_path, monkeypatch):
    monkeypatch.setattr("auditor.history.BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(history, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for args in (("history",), ("compare", "latest", "previous")):
            result = invoke(*args, "--history", history)
            assert result.exit_code == 1 and "locked by another process" in result.output
            assert len(result.output.strip().splitlines()) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# ---- a full disk ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_disk_too_small_for_the_run_is_one_line_and_the_earlier_run_stays(
    coco_dataset, resnet_weights, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    assert audit(coco_dataset, resnet_weights, out).exit_code == 0
    before = (out / "summary.json").read_bytes()

    class Usage:
        free = 1000

    monkeypatch.setattr("auditor.rundir.shutil.disk_usage", lambda path: Usage())
    larger = ("--image-size", 32)  # with the PDF too: a larger run than the earlier one
    result = invoke("audit", "--model", "resnet18", "--weights", resnet_weights, "--data",
                    coco_dataset, "--out", out, *larger)  # fmt: skip
    assert result.exit_code == 1, result.output
    assert str(out) in result.output and "out of disk space" in result.output
    assert "MB free" in result.output and "needs" in result.output
    assert (out / "summary.json").read_bytes() == before  # refused before replacing a file


@pytest.mark.slow
def test_out_of_space_while_writing_is_one_line(
    coco_dataset, resnet_weights, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    real = os.write

    def write(fd: int, data: bytes) -> int:
        if len(data) > 2000:  # every final file, not the marker
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr("auditor.rundir.os.write", write)
    result = audit(coco_dataset, resnet_weights, out)
    assert result.exit_code == 1 and "out of disk space" in result.output, result.output
    assert len([line for line in result.output.splitlines() if "Error" in line]) == 1
    monkeypatch.undo()
    assert audit(coco_dataset, resnet_weights, out).exit_code == 0  # and then it finishes


def test_a_real_full_disk(coco_dataset, resnet_weights, tmp_path):
    """A 256 kB tmpfs: too small for the run; where mounting is not allowed, skipped."""
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        result = audit(coco_dataset, resnet_weights, disk / "run")
        assert result.exit_code == 1 and "out of disk space" in result.output, result.output
        assert str(disk / "run") in result.output
    finally:
        subprocess.run(["umount", str(disk)], check=True)
