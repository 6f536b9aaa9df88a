"""The run directory as a place on disk: whose it is, writing files atomically, owning it
while writing, and saying when it is half-written.

auditor writes only into a folder that is its own (:func:`claim`): a new or empty folder, or
one that holds an earlier output of the same kind (marked by :data:`MARKER`, or, for runs of
earlier versions, by their own record). A folder of a user's files is refused before
anything is written into it, so no audit, report, probe or comparison replaces or deletes a
file that auditor did not write.

Two processes must never interleave their files in one run directory, so whoever writes it
(``auditor audit``, ``auditor report``) holds :class:`RunLock` for the whole job, and whoever
only reads it (``auditor compare``) holds it shared, so it never reads a run being written.
The lock is an ``flock`` on ``.lock`` in the directory: the kernel releases it when the
process ends, however it ends, so a crashed run never blocks the next one; its holder's note,
left in the file by a process killed while holding it, is reported when the lock is taken
over. The lock file is opened without following a symbolic link and must be a regular file
of one link: a ``.lock`` planted to point elsewhere is refused, never truncated.

While the final files of a run are being replaced, the directory holds ``INCOMPLETE``
(:func:`mark_incomplete`); it goes once every file is in place (:func:`mark_complete`).
Readers refuse a directory that holds it: a process killed at any moment leaves the earlier
complete run, or a marked directory beside the resumable checkpoint, never an unmarked mix.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from auditor._version import __version__
from auditor.errors import RunDirError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
INCOMPLETE = "INCOMPLETE"
MARKER = ".auditor.json"
"""Says which kind of auditor output a folder holds: ``{"kind": ..., "auditor_version": ...}``."""

_BOOKKEEPING = re.compile(
    r"\.lock|INCOMPLETE|\.auditor\.json|\.partial\..*|\.write-test\..*|\..+\.[0-9a-f]{8}\.tmp"
)
"""Names auditor keeps beside an output while writing it (lock, markers, resume checkpoints,
temporary files): a folder that holds only these holds nothing of a user's."""


@dataclass(frozen=True)
class Output:
    """A kind of folder auditor writes, named by the command that writes it (``kind``);
    ``files``, the final names it writes there;
    ``legacy``, the file by which an earlier auditor version's output of this kind is
    recognised (a JSON object carrying ``auditor_version``)."""

    kind: str
    files: tuple[str, ...]
    legacy: str | None = None


def claim(directory: Path, output: Output) -> None:
    """Make ``directory`` this ``output``'s, or refuse it, before anything is written there.

    Accepted: a folder that does not exist (created), one that holds nothing but auditor's
    bookkeeping, or one that already holds an output of this kind. Anything else, a folder
    of someone's files or another kind of auditor output, is a :class:`RunDirError` naming
    a file that writing there could replace or delete. Writing the marker also proves the
    folder writable."""
    found = _marked_kind(directory)
    if found is None and directory.is_dir():
        if _is_legacy(directory, output):
            found = output.kind
        elif foreign := _foreign_entries(directory):
            at_risk = sorted(set(foreign) & set(output.files))
            named = [*at_risk, *sorted(set(foreign) - set(at_risk))]
            more = f" and {len(named) - 3} more" if len(named) > 3 else ""
            raise RunDirError(
                f"{directory}: holds files auditor did not write ({', '.join(named[:3])}{more}), "
                f"which auditor {output.kind} could replace or delete there; empty it or choose "
                "another folder."
            )
    if found is not None and found != output.kind:
        raise RunDirError(
            f"{directory}: holds the output of auditor {found}, not of auditor {output.kind}; "
            "choose another folder."
        )
    check_writable(directory)
    if found is None or not (directory / MARKER).is_file():
        marker = {"kind": output.kind, "auditor_version": __version__}
        _write_or_explain(directory / MARKER, json.dumps(marker).encode() + b"\n")


def holds(directory: Path, output: Output) -> bool:
    """``directory`` holds an output of this kind (marked, or written by an earlier version)."""
    kind = _marked_kind(directory)
    return kind == output.kind if kind is not None else _is_legacy(directory, output)


def _marked_kind(directory: Path) -> str | None:
    try:
        marker = json.loads(read_regular(directory / MARKER, limit=4096))
    except (OSError, ValueError):
        return None
    kind = marker.get("kind") if isinstance(marker, dict) else None
    return kind if isinstance(kind, str) else None


def _is_legacy(directory: Path, output: Output) -> bool:
    if output.legacy is None:
        return False
    try:
        record = json.loads(read_regular(directory / output.legacy, limit=64 << 20))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(record, dict) and isinstance(record.get("auditor_version"), str)


def is_bookkeeping(name: str) -> bool:
    """``name`` is one auditor keeps beside an output while writing it."""
    return _BOOKKEEPING.fullmatch(name) is not None


def _foreign_entries(directory: Path) -> list[str]:
    try:
        names = [entry.name for entry in os.scandir(directory)]
    except OSError as exc:
        raise RunDirError(f"{directory}: cannot be listed ({_why(exc)}).") from None
    return [name for name in names if not is_bookkeeping(name)]


def read_regular(path: Path, *, limit: int) -> bytes:
    """The first ``limit`` bytes of ``path``, refusing (``OSError``) a symbolic link or
    anything but a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a new temporary file beside ``path`` (created exclusively, never
    through a symbolic link), then rename it to ``path``: a reader sees the old file or the
    new one, never half of one; two writers never share a temporary file; and a symbolic link
    at ``path`` is replaced, its target untouched. Out of disk space is a
    :class:`RunDirError` naming the folder and the space needed."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)  # fmt: skip
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise out_of_space(path.parent, len(payload), path.name) from None
        raise


def check_space(directory: Path, payloads: dict[str, bytes]) -> None:
    """Raise :class:`RunDirError` before writing, when ``payloads`` cannot fit on the disk
    of ``directory`` (with the files they replace counted as freed)."""
    needed = sum(len(p) for p in payloads.values())
    freed = sum(_size(directory / name) for name in payloads)
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if needed - freed > free:
        raise out_of_space(directory, needed, ", ".join(payloads), free=free)


def out_of_space(
    directory: Path, needed: int, what: str, *, free: int | None = None
) -> RunDirError:
    """The one-line error for a disk too full to hold ``needed`` bytes of ``what``."""
    if free is None:
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            free = 0
    return RunDirError(
        f"{directory}: out of disk space writing {what}: it needs {_megabytes(needed)}, "
        f"{_megabytes(free)} free. Free some space and run the same command again."
    )


def check_writable(directory: Path) -> None:
    """Create ``directory`` if needed and prove a file can be written there, before any work."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"{directory}: cannot write the run directory ({_why(exc)}).") from None


def mark_incomplete(directory: Path) -> None:
    """Say, before the first final file of a run is replaced, that the directory is not a
    complete run until :func:`mark_complete`."""
    atomic_write(directory / INCOMPLETE, b"An auditor run is being written here, or its writer "
                 b"was stopped; run the same command again to finish it.\n")  # fmt: skip


def mark_complete(directory: Path) -> None:
    (directory / INCOMPLETE).unlink(missing_ok=True)


def check_complete(directory: Path) -> None:
    """Raise :class:`RunDirError` for a directory whose run was never finished."""
    if (directory / INCOMPLETE).exists():
        raise RunDirError(
            f"{directory}: incomplete run (its writer was stopped while writing it); run the "
            "same audit again to finish it."
        )


class RunLock:
    """Ownership of a run directory, as a context manager: exclusive for a writer, shared for
    a reader (``shared=True``, which neither creates the directory nor writes to it).

    A writer fails at once with :class:`RunDirError` naming the process that holds the lock;
    a reader fails while a writer holds it.
    """

    def __init__(self, directory: str | Path, *, purpose: str, shared: bool = False) -> None:
        self.directory = Path(directory)
        self.purpose = purpose
        self.shared = shared
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        path = self.directory / LOCK_NAME
        if self.shared and not os.path.lexists(path):
            return self  # never written by this auditor version, or not a run directory
        if not self.shared:
            check_writable(self.directory)
        fd = _open_lock(path, shared=self.shared)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            if self.shared:
                raise RunDirError(
                    f"{self.directory}: the run is being written ({holder}); wait for it to finish."
                ) from None
            raise RunDirError(
                f"{self.directory}: another auditor process is using this run directory "
                f"({holder}); wait for it to finish or choose another --out."
            ) from None
        if not self.shared:
            left = _read_holder(fd)
            if left != "holder unknown":
                log.warning("%s: taking over the lock left by %s, which ended without "
                            "releasing it.", self.directory, left)  # fmt: skip
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self._holder()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            if not self.shared:
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _holder(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "purpose": self.purpose,
            "command": " ".join(sys.argv)[:300],
        }


def _open_lock(path: Path, *, shared: bool) -> int:
    """The lock file's descriptor: opened without following a symbolic link, and refused
    unless it is a regular file with one link, so that nothing but auditor's own lock file
    is ever truncated."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    flags |= os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else _why(exc)
        raise RunDirError(f"{path}: cannot open the lock file ({why}); remove it.") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = "has other hard links" if stat.S_ISREG(info.st_mode) else "is not a regular file"
        raise RunDirError(f"{path}: the lock file {what}, so auditor will not use it; remove it.")
    return fd


def _write_or_explain(path: Path, payload: bytes) -> None:
    try:
        atomic_write(path, payload)
    except RunDirError:
        raise
    except OSError as exc:
        raise RunDirError(f"{path.parent}: cannot write the run directory ({_why(exc)}).") from None


def _read_holder(fd: int) -> str:
    """The lock holder in words, from what it wrote into the lock file."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        holder = {}
    if not isinstance(holder, dict) or "pid" not in holder:
        return "holder unknown"
    return (
        f"{holder.get('purpose', 'a job')} by pid {holder['pid']} on {holder.get('host', '?')} "
        f"since {holder.get('since', '?')}"
    )


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
