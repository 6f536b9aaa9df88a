"""The run history: one SQLite file (standard library, no server) that every audit adds its
run to, so scheduled audits can be listed and compared with the ones before them.

Tables (schema version in ``PRAGMA user_version``; :data:`MIGRATIONS` bring an older file up
to date, and a file from a newer auditor is refused, never altered):

- ``runs``: one row per audit: id, time, the audit's name (``--name``; by default its run
  directory), model name (the spec) and sha256, data sha256, config hash, auditor version,
  verdict, flagged classes (JSON), run directory.
  "The previous run" of an audit is the newest complete run of the same *name*: two audits
  of one model on two datasets, run from one folder, never stand for each other.
- ``class_results``: one row per run x class x method: status, n, accuracy, mean
  chance-corrected energy C with its CI, swap gap with its CI, background-only rate.

Writers take SQLite's write lock up front (``BEGIN IMMEDIATE``) and wait for it up to
``BUSY_TIMEOUT_S``, so two audits finishing together both land, one after the other.

Every SQLite failure, at any call, is a :class:`~auditor.errors.HistoryError` that names the
file and says what is wrong with it in words (locked, read-only, damaged, full).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditor.errors import HistoryError
from auditor.record import Summary
from auditor.record.summary import pair

DEFAULT_PATH = Path("reports/history.sqlite")
ENVIRONMENT = "AUDITOR_HISTORY"


def history_path(
    given: str | Path | None, configured: str | None = None, environ: Mapping[str, str] = {}
) -> Path:
    """Which history a command uses: the one ``given`` (``--history``), else the config's,
    else ``$AUDITOR_HISTORY`` (in ``environ``), else :data:`DEFAULT_PATH`. The one rule of
    every command that reads or writes the history."""
    return Path(given or configured or environ.get(ENVIRONMENT) or DEFAULT_PATH)


BUSY_TIMEOUT_S = 60.0


def _create_v1(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created TEXT NOT NULL,
            recorded TEXT NOT NULL,
            model_name TEXT NOT NULL,
            model_sha256 TEXT,
            data_spec TEXT NOT NULL,
            data_sha256 TEXT,
            config_hash TEXT,
            auditor_version TEXT NOT NULL,
            verdict TEXT NOT NULL,
            flagged_classes TEXT NOT NULL,
            run_dir TEXT NOT NULL,
            reused INTEGER NOT NULL DEFAULT 0
        )""")
    db.execute("CREATE INDEX runs_by_model ON runs (model_name, id)")
    db.execute("""
        CREATE TABLE class_results (
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            class TEXT NOT NULL,
            method TEXT NOT NULL,
            status TEXT NOT NULL,
            n INTEGER NOT NULL,
            accuracy REAL,
            c REAL, c_low REAL, c_high REAL,
            swap_gap REAL, swap_gap_low REAL, swap_gap_high REAL,
            background_only_rate REAL,
            PRIMARY KEY (run_id, class, method)
        )""")


def _names_v2(db: sqlite3.Connection) -> None:
    """Version 2: the audit's name. A run recorded before names existed is named after its
    run directory, the default name of a new run written there, so a scheduled audit that
    writes to one folder keeps its previous run across the upgrade."""
    db.execute("ALTER TABLE runs ADD COLUMN name TEXT")
    db.execute("UPDATE runs SET name = run_dir")
    db.execute("CREATE INDEX runs_by_name ON runs (name, id)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_create_v1, _names_v2)
"""``MIGRATIONS[v]`` takes a database from schema version ``v`` to ``v + 1``."""
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class HistoryRun:
    """One row of ``runs``."""

    id: int
    created: str
    name: str
    model_name: str
    model_sha256: str | None
    data_sha256: str | None
    config_hash: str | None
    auditor_version: str
    verdict: str
    flagged_classes: list[str]
    run_dir: str
    reused: bool

    @property
    def present(self) -> bool:
        """The run directory still holds this run: complete, and not replaced by a later run
        written to the same place (its ``run.json`` has this run's creation time)."""
        folder = Path(self.run_dir)
        if (folder / "INCOMPLETE").exists():
            return False
        try:
            created = json.loads((folder / "run.json").read_text()).get("created")
        except (OSError, ValueError, AttributeError):
            return False
        return bool(created == self.created)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "created": self.created, "name": self.name,
            "model_name": self.model_name,
            "model_sha256": self.model_sha256, "data_sha256": self.data_sha256,
            "config_hash": self.config_hash, "auditor_version": self.auditor_version,
            "verdict": self.verdict, "flagged_classes": self.flagged_classes,
            "run_dir": self.run_dir, "reused": self.reused, "present": self.present,
        }  # fmt: skip


class History:
    """An open history database (:func:`open_history`)."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    def close(self) -> None:
        with _translated(self.path):
            self.db.close()

    def record(
        self, summary: Summary, run_info: dict[str, Any], run_dir: Path, *, reused: bool
    ) -> int:
        """Add a finished run (its ``summary.json`` and ``run.json``, whose ``name`` names
        the audit; without one, the run directory does); returns its id."""
        inputs = run_info.get("inputs", {})
        name = run_info.get("name") or audit_name(None, run_dir)
        with _translated(self.path), self._writing():
            cursor = self.db.execute(
                "INSERT INTO runs (created, recorded, name, model_name, model_sha256, "
                "data_spec, data_sha256, config_hash, auditor_version, verdict, "
                "flagged_classes, run_dir, reused) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_info.get("created") or _now(), _now(), name, summary.model.spec,
                    inputs.get("model_sha256") or summary.model.sha256,
                    summary.dataset.spec, inputs.get("data_sha256"),
                    inputs.get("config_hash"), str(run_info.get("auditor_version", "?")),
                    summary.verdict, json.dumps(summary.flagged_classes),
                    str(run_dir.resolve()), int(reused),
                ),
            )  # fmt: skip
            run_id = int(cursor.lastrowid or 0)
            self.db.executemany(
                "INSERT INTO class_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *row) for row in class_rows(summary)],
            )
        return run_id

    def runs(
        self,
        *,
        name: str | None = None,
        model: str | None = None,
        class_name: str | None = None,
        last: int | None = None,
    ) -> list[HistoryRun]:
        """Runs, newest first; ``name`` keeps one audit's runs; ``model`` matches the model
        name or a sha256 prefix; ``class_name`` keeps the runs that audited that class."""
        where, args = [], []
        if name:
            where.append("name = ?")
            args.append(name)
        if model:
            where.append("(model_name = ? OR model_sha256 LIKE ?)")
            args += [model, f"{model}%"]
        if class_name:
            where.append("id IN (SELECT run_id FROM class_results WHERE class = ?)")
            args.append(class_name)
        query = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        query += " ORDER BY id DESC" + (" LIMIT ?" if last else "")
        with _translated(self.path):
            rows = self.db.execute(query, [*args, last] if last else args).fetchall()
            return [_run(r) for r in rows]

    def get(self, run_id: int) -> HistoryRun | None:
        with _translated(self.path):
            row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            return None if row is None else _run(row)

    def class_results(self, run_id: int) -> list[dict[str, Any]]:
        with _translated(self.path):
            rows = self.db.execute(
                "SELECT * FROM class_results WHERE run_id = ? ORDER BY class, method", (run_id,)
            ).fetchall()
            return [dict(r) for r in rows]

    def names(self) -> list[str]:
        """Every audit's name, the most recently run first."""
        with _translated(self.path):
            rows = self.db.execute(
                "SELECT name FROM runs GROUP BY name ORDER BY MAX(id) DESC"
            ).fetchall()
            return [r["name"] for r in rows]

    def trend(self, name: str, class_name: str, method: str, *, last: int) -> list[dict]:
        """The class's results in the last ``last`` runs of the audit ``name``, oldest first."""
        with _translated(self.path):
            rows = self.db.execute(
                "SELECT r.id, r.created, c.status, c.accuracy, c.c, c.swap_gap FROM runs r "
                "JOIN class_results c ON c.run_id = r.id WHERE r.name = ? AND c.class = ? "
                "AND c.method = ? ORDER BY r.id DESC LIMIT ?",
                (name, class_name, method, last),
            ).fetchall()
            return [dict(r) for r in reversed(rows)]

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, waiting for another writer's to end."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


def open_history(path: str | Path, *, create: bool = True) -> History:
    """Open (and, with ``create``, create or migrate) the history at ``path``. A file that is
    not SQLite, or was written by a newer auditor, is a :class:`HistoryError`."""
    path = Path(path)
    if not create and not path.is_file():
        raise HistoryError(f"{path}: no run history here (give --history PATH).")
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HistoryError(f"{path}: cannot create the run history ({exc.strerror}).") from None
    with _translated(path):
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys = ON")
            _migrate(db, path)
        except BaseException:
            db.close()
            raise
    return History(db, path)


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """SQLite's errors as one :class:`HistoryError` naming ``path`` and what is wrong."""
    try:
        yield
    except sqlite3.Error as exc:
        raise HistoryError(f"{path}: {_trouble(exc)}.") from None


def _trouble(exc: sqlite3.Error) -> str:
    """What is wrong with the history, in words, from SQLite's error code."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return (
            f"the run history is locked by another process (waited {BUSY_TIMEOUT_S:.0f} s); "
            "try again once it is done"
        )
    if primary == sqlite3.SQLITE_READONLY:
        return "the run history is read-only, so the run could not be recorded in it"
    if primary == sqlite3.SQLITE_FULL:
        return "the disk holding the run history is full"
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return f"not a run history, or a damaged one ({exc})"
    if primary == sqlite3.SQLITE_CANTOPEN:
        return "the run history cannot be opened (is its folder writable?)"
    return f"the run history failed ({exc})"


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`, one migration per transaction, under the
    write lock, so two processes opening a new file create it once."""
    while True:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"{path}: written by a newer auditor (history schema {version}; this one "
                f"reads up to {SCHEMA_VERSION}); upgrade auditor to use it."
            )
        if version == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            if int(db.execute("PRAGMA user_version").fetchone()[0]) == version:
                MIGRATIONS[version](db)
                db.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def class_rows(summary: Summary) -> list[tuple[Any, ...]]:
    """(class, method, status, n, accuracy, C, C low, C high, swap gap, its CI,
    background-only rate) per class and audited method, from a run's summary."""
    rows = []
    for c in summary.classes:
        b = c.behaviour
        gap_low, gap_high = pair(None if b is None else b.swap_gap_ci95)
        for method in summary.methods:
            m = c.metrics.get(method)
            low, high = pair(None if m is None else m.ci95)
            rows.append((
                c.name, method, c.status, c.n, c.accuracy, c.metric(method), low, high,
                None if b is None else b.swap_gap, gap_low, gap_high,
                None if b is None else b.background_only_accuracy,
            ))  # fmt: skip
    return rows


def _run(row: sqlite3.Row) -> HistoryRun:
    return HistoryRun(
        id=int(row["id"]), created=row["created"], name=row["name"],
        model_name=row["model_name"],
        model_sha256=row["model_sha256"], data_sha256=row["data_sha256"],
        config_hash=row["config_hash"], auditor_version=row["auditor_version"],
        verdict=row["verdict"], flagged_classes=list(json.loads(row["flagged_classes"])),
        run_dir=row["run_dir"], reused=bool(row["reused"]),
    )  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def audit_name(given: str | None, out: str | Path) -> str:
    """The name an audit is known by across time: the one ``given`` (``--name``, the config's
    ``name``), else its run directory, resolved (``reports/nightly`` from two working folders
    is one audit only when it is one folder)."""
    return given or str(Path(out).resolve())


def previous_of(history: History, name: str, before: int | None = None) -> HistoryRun | None:
    """The newest run of the audit ``name`` (older than run ``before``, when given) whose run
    directory is still complete. A run of another name never stands for it."""
    for run in history.runs(name=name):
        if (before is None or run.id < before) and run.present:
            return run
    return None


def table(runs: Sequence[HistoryRun]) -> list[str]:
    """The runs as lines of a terminal table."""
    head = ("id", "created", "name", "model", "sha256", "verdict", "flagged", "run")
    lines = [f"{head[0]:>5}  {head[1]:<25} {head[2]:<20} {head[3]:<20} {head[4]:<12} "
             f"{head[5]:<7} {head[6]:<24} {head[7]}"]  # fmt: skip
    for r in runs:
        flagged = (", ".join(r.flagged_classes) or "-")[:24]
        sha = (r.model_sha256 or "-")[:12]
        where = r.run_dir if r.present else f"{r.run_dir} (moved, replaced or deleted)"
        lines.append(f"{r.id:>5}  {r.created:<25} {_short(r.name, 20):<20} "
                     f"{r.model_name[:20]:<20} {sha:<12} {r.verdict:<7} {flagged:<24} "
                     f"{where}")  # fmt: skip
    return lines


def _short(text: str, width: int) -> str:
    """``text`` in ``width`` characters: a path keeps its end, where its folder name is."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]
