"""The run directory as a place on disk: writing files atomically, owning it while writing,
and saying when it is half-written.

Two processes must never interleave their files in one run directory, so whoever writes it
(``auditor audit``, ``auditor report``) holds :class:`RunLock` for the whole job, and whoever
only reads it (``auditor compare``) holds it shared, so it never reads a run being written.
The lock is an ``flock`` on ``.lock`` in the directory: the kernel releases it when the
process ends, however it ends, so a crashed run never blocks the next one; its holder's note,
left in the file by a process killed while holding it, is reported when the lock is taken
over.

While the final files of a run are being replaced, the directory holds ``INCOMPLETE``
(:func:`mark_incomplete`); it goes once every file is in place (:func:`mark_complete`).
Readers refuse a directory that holds it: a process killed at any moment leaves the earlier
complete run, or a marked directory beside the resumable checkpoint, never an unmarked mix.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from auditor.errors import RunDirError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
INCOMPLETE = "INCOMPLETE"


def atomic_write(path: Path, payload: bytes | Callable[[Path], object]) -> None:
    """Write ``payload`` (bytes, or a function that writes the file it is given) to a
    temporary name unique to this call, then rename it to ``path``: a reader sees the old
    file or the new one, never half of one, and two writers never share a temporary file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        if isinstance(payload, bytes):
            tmp.write_bytes(payload)
        else:
            payload(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_writable(directory: Path) -> None:
    """Create ``directory`` if needed and prove a file can be written there, before any work."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test.{os.getpid()}.{secrets.token_hex(4)}"
        probe.write_bytes(b"")
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
        if self.shared and not path.exists():
            return self  # never written by this auditor version, or not a run directory
        if not self.shared:
            check_writable(self.directory)
        try:
            fd = os.open(path, os.O_RDONLY if self.shared else os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(f"{path}: cannot open the lock file ({_why(exc)}).") from None
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


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
