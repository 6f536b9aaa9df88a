"""The run directory as a place on disk: writing files atomically and owning it while writing.

Two processes must never interleave their files in one run directory, so whoever writes it
(``auditor audit``, ``auditor report``) holds :class:`RunLock` for the whole job. The lock is
an ``flock`` on ``.lock`` in the directory: the kernel releases it when the process ends, however
it ends, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from auditor.errors import RunDirError

LOCK_NAME = ".lock"


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


class RunLock:
    """Exclusive ownership of a run directory, as a context manager.

    A second holder fails at once with :class:`RunDirError` naming the process that holds it.
    """

    def __init__(self, directory: str | Path, *, purpose: str) -> None:
        self.directory = Path(directory)
        self.purpose = purpose
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        check_writable(self.directory)
        path = self.directory / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(f"{path}: cannot create the lock file ({_why(exc)}).") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirError(
                f"{self.directory}: another auditor process is writing this run directory "
                f"({holder}); wait for it to finish or choose another --out."
            ) from None
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
