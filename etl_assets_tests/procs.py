"""Processes the slow tests start: each in its own process group, logged to a file, stopped by id.

``Procs`` is a registry a fixture owns: everything it started is stopped when the fixture
ends, whether the test passed or not. Stopping signals the process group (the leader's pid
is its id) and then every descendant found by pid, so run workers and code servers that a
webserver or daemon spawned go too, even if one of them left the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_process_tree(pid: int, *, grace_s: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid`` and every descendant, then SIGKILL what is left."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    _signal_group(pid, signal.SIGTERM)
    for child in descendants:
        _signal_pid(child.pid, signal.SIGTERM)
    everyone = [p for p in [_process(pid), *descendants] if p is not None]
    _, alive = psutil.wait_procs(everyone, timeout=grace_s)
    # Children started while we waited are in the group, or found again here.
    for proc in alive + _descendants_of(alive):
        _signal_pid(proc.pid, signal.SIGKILL)
    _signal_group(pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _descendants_of(procs: Sequence[psutil.Process]) -> list[psutil.Process]:
    out: list[psutil.Process] = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            out += proc.children(recursive=True)
    return out


@dataclass
class Procs:
    """The processes one fixture started; ``stop_all`` ends them (newest first), by pid."""

    log_dir: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, cmd: Sequence[str], *, env: Mapping[str, str], cwd: str | Path | None = None) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                list(cmd), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, start_new_session=True,  # own session and process group
            )  # fmt: skip
        finally:
            log_file.close()  # the child holds its own descriptor
        proc = Proc(name, popen, log_path)
        self.started.append(proc)
        return proc

    def stop(self, proc: Proc, *, grace_s: float = 10.0) -> None:
        stop_process_tree(proc.pid, grace_s=grace_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)

    def logs(self, chars: int = 3000) -> str:
        return "\n".join(f"----- {p.name} (pid {p.pid}) -----\n{p.log_tail(chars)}" for p in self.started)


@contextlib.contextmanager
def managed(log_dir: Path) -> Iterator[Procs]:
    procs = Procs(log_dir)
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_until(predicate: Callable[[], object], *, timeout_s: float, interval_s: float = 0.5,
               what: str = "condition", watch: Sequence[Proc] = (), on_timeout: Callable[[], str] | None = None) -> object:  # fmt: skip
    """Poll ``predicate`` until it returns something truthy; fail early if a watched process died."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        for proc in watch:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited with {proc.popen.returncode} while waiting for {what}:\n"
                                     f"{proc.log_tail()}")  # fmt: skip
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval_s)


def wait_http(url: str, *, timeout_s: float, proc: Proc | None = None) -> None:
    """Wait until ``url`` answers 200."""

    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout_s=timeout_s, what=f"HTTP 200 from {url}", watch=[proc] if proc else [])


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
