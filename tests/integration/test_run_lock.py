"""The per-run lock: two processes must never work on the same run at once."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from graph_distill.run import lock as durability
from graph_distill.run.lock import RunLockedError, check_run_free, hold_run, lock_path
from graph_distill.run.manifest import ResumeError, new_run_id, open_manifest

RUN = "20250101-000000-abcdef"
HOLDER_TIMEOUT = 60.0


def message(pid: int) -> str:
    return (
        f"run {RUN} is being worked on by another graph-distill process (pid {pid}); "
        "wait for it or stop it first"
    )


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process holding the run until killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from graph_distill.run.lock import hold_run
        with hold_run(Path({str(tmp_path)!r}), {RUN!r}):
            print("held", flush=True)
            time.sleep(3600)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line == "held\n", process.stderr.read() if process.stderr else ""
        yield process
    finally:
        process.kill()
        process.wait(HOLDER_TIMEOUT)


def test_second_hold_in_one_process_is_refused(tmp_path: Path) -> None:
    with hold_run(tmp_path, RUN):
        assert lock_path(tmp_path, RUN).read_text() == f"{os.getpid()}\n"
        with pytest.raises(RunLockedError) as refused, hold_run(tmp_path, RUN):
            pytest.fail("the run was held twice")
        with pytest.raises(RunLockedError):
            check_run_free(tmp_path, RUN)
    assert str(refused.value) == message(os.getpid())
    assert isinstance(refused.value, ResumeError)
    assert refused.value.pid == os.getpid()


def test_release_frees_the_run_and_removes_the_file(tmp_path: Path) -> None:
    with hold_run(tmp_path, RUN):
        pass
    assert not lock_path(tmp_path, RUN).exists()
    check_run_free(tmp_path, RUN)
    with hold_run(tmp_path, RUN), pytest.raises(RunLockedError):
        check_run_free(tmp_path, RUN)
    with hold_run(tmp_path, RUN):
        pass


def test_release_after_an_error_frees_the_run(tmp_path: Path) -> None:
    with pytest.raises(KeyError), hold_run(tmp_path, RUN):
        raise KeyError("boom")
    with hold_run(tmp_path, RUN):
        pass


def test_other_runs_and_directories_are_independent(tmp_path: Path) -> None:
    with hold_run(tmp_path, RUN), hold_run(tmp_path, new_run_id()), hold_run(tmp_path / "o", RUN):
        pass


def test_check_creates_nothing(tmp_path: Path) -> None:
    check_run_free(tmp_path, RUN)
    assert list(tmp_path.iterdir()) == []


def test_a_child_holding_the_run_blocks_until_killed(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(RunLockedError) as refused, hold_run(tmp_path, RUN):
        pytest.fail("the run was held by two processes")
    assert str(refused.value) == message(holder.pid)
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
        check_run_free(tmp_path, RUN)

    holder.send_signal(signal.SIGKILL)
    holder.wait(HOLDER_TIMEOUT)
    # The killed holder leaves its file, but not its lock.
    assert lock_path(tmp_path, RUN).exists()
    check_run_free(tmp_path, RUN)
    with hold_run(tmp_path, RUN):
        assert lock_path(tmp_path, RUN).read_text() == f"{os.getpid()}\n"
    assert not lock_path(tmp_path, RUN).exists()


def test_acquirer_of_an_unlinked_lock_file_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder releasing (unlink, unlock) between an acquirer's open and its flock: the
    acquirer must not keep a lock on the unlinked file, which nobody else would see."""
    first = ExitStack()
    first.enter_context(hold_run(tmp_path, RUN))
    real_flock = fcntl.flock
    released = False

    def flock_after_release(fd: int, operation: int) -> None:
        nonlocal released
        if not released and operation & fcntl.LOCK_EX:
            released = True
            first.close()
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_release)
    with hold_run(tmp_path, RUN):
        monkeypatch.setattr(fcntl, "flock", real_flock)
        assert released
        assert lock_path(tmp_path, RUN).exists()
        with pytest.raises(RunLockedError), hold_run(tmp_path, RUN):
            pytest.fail("the run was held twice")


def test_without_fcntl_runs_are_not_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durability, "fcntl", None)
    with hold_run(tmp_path, RUN), hold_run(tmp_path, RUN):
        check_run_free(tmp_path, RUN)
    assert list(tmp_path.iterdir()) == []


async def test_async_hold_with_the_store(tmp_path: Path) -> None:
    """As runner.run_conversations holds a new run: from before its creation."""
    run_id = new_run_id()
    async with hold_run(tmp_path, run_id), open_manifest(tmp_path) as manifest:
        with pytest.raises(RunLockedError):
            check_run_free(tmp_path, run_id)
        created = await manifest.create({"count": 1}, 1, run_id=run_id)
        assert created.run_id == run_id
        assert (await manifest.get(run_id)).run_id == run_id
        assert len(await manifest.items(run_id)) == 1
    assert not lock_path(tmp_path, run_id).exists()
    with hold_run(tmp_path, run_id):
        pass
