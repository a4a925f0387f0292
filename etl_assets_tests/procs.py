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
    stop_process_trees([pid], grace_s=grace_s)


def stop_process_trees(pids: Sequence[int], *, grace_s: float = 10.0) -> None:
    """:func:`stop_process_tree` for several trees at once, so their grace periods overlap."""
    everyone: list[psutil.Process] = []
    for pid in pids:
        leader = _process(pid)
        if leader is not None:
            everyone.append(leader)
            everyone += _descendants_of([leader])
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    for proc in everyone:
        _signal_pid(proc.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(everyone, timeout=grace_s)
    # Children started while we waited are in a group we signal, or found again here.
    for proc in alive + _descendants_of(alive):
        _signal_pid(proc.pid, signal.SIGKILL)
    for pid in pids:
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
    """The processes one fixture started; ``stop_all`` ends them all, by pid."""

    log_dir: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, cmd: Sequence[str], *, env: Mapping[str, str], cwd: str | Path | None = None) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                list(cmd),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group
            )
        finally:
            log_file.close()  # the child holds its own descriptor
        proc = Proc(name, popen, log_path)
        self.started.append(proc)
        return proc

    def stop(self, proc: Proc, *, grace_s: float = 10.0) -> None:
        stop_process_tree(proc.pid, grace_s=grace_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=5)

    def stop_all(self, *, grace_s: float = 5.0) -> None:
        stop_process_trees([p.pid for p in self.started], grace_s=grace_s)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)

    def logs(self, chars: int = 3000) -> str:
        return "\n".join(f"----- {p.name} (pid {p.pid}) -----\n{p.log_tail(chars)}" for p in self.started)


@contextlib.contextmanager
def managed(log_dir: Path) -> Iterator[Procs]:
    procs = Procs(log_dir)
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_until(
    predicate: Callable[[], object],
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    what: str = "condition",
    watch: Sequence[Proc] = (),
    on_timeout: Callable[[], str] | None = None,
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail early if a watched process died."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        for proc in watch:
            if not proc.alive():
                raise AssertionError(
                    f"{proc.name} exited with {proc.popen.returncode} while waiting for {what}:\n{proc.log_tail()}"
                )
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


# -- a Dagster deployment on loopback: webserver + daemon against one instance -------------------

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_INSTANCE_YAML = PROJECT_ROOT / "deploy" / "dagster.yaml"
WORKSPACE_YAML = PROJECT_ROOT / "workspace.yaml"
LOCATION = "etl_assets"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the repository a Definitions object becomes
ASSET_JOB = "__ASSET_JOB"  # the implicit job the UI's Materialize button launches

LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status creationTime startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}"""

DONE = {"SUCCESS", "FAILURE", "CANCELED"}


def write_instance_yaml(home: Path, **overrides: object) -> Path:
    """$DAGSTER_HOME/dagster.yaml: deploy/dagster.yaml with top-level keys merged from ``overrides``."""
    import yaml

    config = yaml.safe_load(DEPLOY_INSTANCE_YAML.read_text())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Deployment:
    """A running dagster-webserver and dagster-daemon, and the GraphQL calls the tests make."""

    url: str
    webserver: Proc
    daemon: Proc
    procs: Procs
    env: dict[str, str]

    def graphql(self, query: str, variables: Mapping[str, object] | None = None) -> dict:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": dict(variables or {})}, timeout=60.0
        )
        assert response.status_code == 200, f"GraphQL answered {response.status_code}: {response.text[:2000]}"
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def launch(
        self, asset_keys: Sequence[Sequence[str]], partition: str, *, tags: Mapping[str, str] | None = None
    ) -> str:
        """Launch a run of ``asset_keys`` for one partition, as the UI's Materialize button does."""
        params = {
            "mode": "default",
            "runConfigData": "{}",
            "executionMetadata": {
                "tags": [
                    {"key": "dagster/partition", "value": partition},
                    *({"key": k, "value": v} for k, v in (tags or {}).items()),
                ]
            },
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "pipelineName": ASSET_JOB,
                "assetSelection": [{"path": list(k)} for k in asset_keys],
            },
        }
        result = self.graphql(LAUNCH, {"executionParams": params})["launchPipelineExecution"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def runs(self, **filter_: object) -> list[dict]:
        data = self.graphql(RUNS, {"filter": filter_})["runsOrError"]
        assert data["__typename"] == "Runs", data
        return data["results"]

    def run(self, run_id: str) -> dict:
        (found,) = self.runs(runIds=[run_id])
        return found

    def wait_runs_done(self, run_ids: Sequence[str], *, timeout_s: float = 180.0) -> list[dict]:
        def done() -> list[dict] | None:
            runs = self.runs(runIds=list(run_ids))
            return runs if len(runs) == len(run_ids) and all(r["status"] in DONE for r in runs) else None

        return wait_until(
            done,
            timeout_s=timeout_s,
            interval_s=1.0,
            what=f"runs {list(run_ids)} to finish",
            watch=[self.webserver, self.daemon],
            on_timeout=self.procs.logs,
        )  # type: ignore[return-value]

    def wait_idle(self, *, timeout_s: float = 300.0) -> None:
        """Wait until no run is queued or in progress."""
        busy = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]
        wait_until(
            lambda: not self.runs(statuses=busy),
            timeout_s=timeout_s,
            interval_s=1.0,
            what="no runs in flight",
            watch=[self.webserver, self.daemon],
            on_timeout=self.procs.logs,
        )

    def wait_ready(self, *, timeout_s: float = 120.0) -> Deployment:
        """Wait until the UI answers, the code location has loaded and every daemon has a heartbeat."""
        wait_http(f"{self.url}/server_info", timeout_s=timeout_s, proc=self.webserver)
        watch = [self.webserver, self.daemon]
        wait_until(
            self.location_loaded,
            timeout_s=timeout_s,
            what="the code location to load",
            watch=watch,
            on_timeout=self.procs.logs,
        )
        wait_until(
            self.daemons_healthy,
            timeout_s=timeout_s,
            what="the daemons' heartbeats",
            watch=watch,
            on_timeout=self.procs.logs,
        )
        return self

    def location_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )
        entries = data["workspaceOrError"]["locationEntries"]
        for entry in entries:
            if entry["locationOrLoadError"] and entry["locationOrLoadError"]["__typename"] == "PythonError":
                raise AssertionError(f"code location failed to load: {entry['locationOrLoadError']['message']}")
        return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)

    def daemons_healthy(self) -> bool:
        data = self.graphql("{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }")
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        return bool(statuses) and all(s["healthy"] for s in statuses if s["required"])


def start_deployment(procs: Procs, *, env: Mapping[str, str]) -> Deployment:
    """Start dagster-webserver and dagster-daemon on loopback with the project's workspace.yaml.

    Returns at once; call :meth:`Deployment.wait_ready` before using it. ``env`` must hold
    DAGSTER_HOME (with its dagster.yaml) and everything the runs need: the daemon's run
    workers inherit its environment.
    """
    import sys

    bin_dir = Path(sys.executable).parent
    port = free_port()
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', os.environ.get('PATH', ''))}"}
    webserver = procs.start(
        "webserver",
        [str(bin_dir / "dagster-webserver"), "-w", str(WORKSPACE_YAML), "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=PROJECT_ROOT,
    )
    daemon = procs.start(
        "daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", str(WORKSPACE_YAML)], env=env, cwd=PROJECT_ROOT
    )
    return Deployment(f"http://127.0.0.1:{port}", webserver, daemon, procs, dict(env))
