"""One process per run: an flock the kernel drops when its holder dies."""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: runs are not locked there.
    fcntl = None  # type: ignore[assignment]
from graph_distill.run.manifest import ResumeError


class RunLockedError(ResumeError):
    """Another process holds the run (``hold_run``)."""

    def __init__(self, run_id: str, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"run {run_id} is being worked on by another graph-distill process ({holder}); "
            "wait for it or stop it first"
        )
        self.run_id = run_id
        self.pid = pid


def lock_path(conversation_dir: Path, run_id: str) -> Path:
    return Path(conversation_dir) / f".graph-distill-run-{run_id}.lock"


def hold_run(conversation_dir: Path, run_id: str) -> RunHold:
    """Hold run ``run_id`` of ``conversation_dir`` for this process (``with`` or ``async with``),
    or raise RunLockedError on entering.

    An flock on ``lock_path``: the kernel drops it when the process dies, kill -9 included, so
    a crashed run never stays locked. The lock file goes away on release; an acquirer that
    locked a file since unlinked by its releasing holder retries on the new one (comparing
    inodes), which keeps the directory free of one stale file per run."""
    return RunHold(lock_path(conversation_dir, run_id), run_id)


class RunHold:
    """``hold_run``'s lock; entering never blocks, so it serves async code as it is."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self._fd: int | None = None

    def __enter__(self) -> None:
        if fcntl is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = _acquire(self.path, self.run_id)
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc_info: object) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                self.path.unlink()
            # Unlocks the open file description, even if a forked child still shares it.
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__()


def check_run_free(conversation_dir: Path, run_id: str) -> None:
    """Raise RunLockedError if another process holds the run: an early check for a resume
    (``hold_run`` stays the one that counts). Creates nothing."""
    if fcntl is None:
        return
    path = lock_path(conversation_dir, run_id)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        if _same_file(fd, path):
            raise RunLockedError(run_id, _holder_pid(fd)) from None
    finally:
        os.close(fd)


def _acquire(path: Path, run_id: str) -> int:
    while True:
        # Not inherited by subprocesses (PEP 446): a model server must not keep the run locked.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current, pid = _same_file(fd, path), _holder_pid(fd)
            os.close(fd)
            if current:
                raise RunLockedError(run_id, pid) from None
            continue
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _holder_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None
