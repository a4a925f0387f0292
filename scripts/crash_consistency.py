#!/usr/bin/env python
# ruff: noqa: T201  - a script whose output is its report
"""Crash consistency: SIGKILL a sync at random moments, re-run it, check exact convergence.

Each trial starts a fresh tenant (fake Jira site, SQLite database, Qdrant folder or fake
Qdrant server, Dagster home), optionally syncs it once and changes the site (an *update*
trial), then runs the whole graph in a child process and kills that child's process group
with SIGKILL. The fakes are slow on purpose (Jira and embedding latency, a Qdrant server
whose acknowledgements lag, a trigger that makes every row write of the table transaction
take ~25 ms) so that each phase of a run lasts long enough to be hit: raw landing, the
table transaction, an embedding request in flight, vectors received but not yet upserted,
an upsert in flight.

The moment is random within a target phase (targets taken in turn): the script watches
from outside the child — the k-th step of a kind starting, in the run's event log; the
k-th embedding request starting or being answered, or the k-th upsert arriving, at the
fakes — with k random, then waits a random offset and kills. The phase the kill really hit
is read back afterwards from the killed run's event log and from what the fakes had in
flight at that instant. One more run (reconciling issues, as the periodic reconciliation
does) must then leave tables equal to the site and points equal to live rows:
``etl_assets.fakes.convergence.convergence_problems`` finds nothing, or the trial failed.

Runs execute in children of a "zygote" process that imported Dagster and the project once
and forks per run, so a trial costs seconds rather than an interpreter start per run.

    python scripts/crash_consistency.py --trials 50 --seed 1206
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore", message="Failed to obtain server version")  # the parent's short-lived readers
warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")

TENANT = "1"
EMAIL = "crash@example.test"
TOKEN = "jira-token-crash-SECRETVALUE"
API_KEY = "sk-test-crash-secret"
DIMENSIONS = 64
SLOW_ROW_ITERATIONS = 50_000  # a recursive CTE per row write: ~25 ms on the machines we run on
ENTITY_TABLES = ("projects", "wits", "statuses", "issues")
LOCAL_WRITE_S = 0.03  # an assumed window after an answer in which local mode is still writing those points
RECONCILE = {"ops": {"jira__raw__raw_jira_issues": {"config": {"reconcile": True}}}}
TARGETS = ("raw landing", "table transaction", "embedding", "after embedding", "upsert")


@dataclass
class Latency:
    jira_s: float = 0.06
    embeddings_s: float = 0.1
    qdrant_s: float = 0.06


# -- the zygote: import once, fork per run ----------------------------------------------------------


def _zygote() -> None:
    """Read run commands (JSON lines) on stdin; fork a child per command; report pid and exit status."""
    import dagster  # noqa: F401  - imported here once, shared by every forked child
    import qdrant_client  # noqa: F401

    import etl_assets.defs.build  # noqa: F401
    from etl_assets.core.embeddings.tokens import cl100k

    cl100k()  # the tokenizer's tables, loaded once
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(command)  # never returns
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "exit": os.waitstatus_to_exitcode(status)}), flush=True)


def _child(command: dict[str, Any]) -> None:
    code = 2
    try:
        os.setsid()  # its own process group: the parent kills the group
        log = os.open(command["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.environ.update(command["env"])
        import dagster as dg

        from etl_assets.defs.build import build_definitions

        job = build_definitions().resolve_implicit_global_asset_job_def()
        with dg.DagsterInstance.get() as instance:
            result = job.execute_in_process(
                partition_key=command["partition"],
                instance=instance,
                run_config=command.get("run_config"),
                raise_on_error=False,
            )
        code = 0 if result.success else 1
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the zygote
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Zygote:
    """The parent's handle on the zygote process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--zygote"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._expect("ready", timeout=180)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(line))
        self.lines.put({"eof": True})

    def _expect(self, key: str, timeout: float) -> dict[str, Any]:
        message = self.lines.get(timeout=timeout)
        if key not in message:
            raise RuntimeError(f"zygote said {message}, expected {key!r}")
        return message

    def start(self, env: dict[str, str], log: Path, run_config: dict | None = None) -> int:
        assert self.proc.stdin is not None
        command = {"env": env, "partition": TENANT, "log": str(log), "run_config": run_config}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return int(self._expect("pid", timeout=60)["pid"])

    def wait(self, timeout: float = 600) -> int:
        return int(self._expect("exit", timeout=timeout)["exit"])

    def exited(self) -> bool:
        """Whether the running child has ended (its exit report is waiting to be read)."""
        return not self.lines.empty()

    def run(self, env: dict[str, str], log: Path, run_config: dict | None = None) -> int:
        self.start(env, log, run_config)
        return self.wait()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # the zygote this object started, by its own handle
            self.proc.wait()


# -- fakes with a timeline ----------------------------------------------------------------------------


class Timeline:
    """(what, started, finished) of every request, in time.time() seconds; inf until answered."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()

    def begin(self, what: str) -> int:
        with self.lock:
            self.entries.append((what, time.time(), float("inf")))
            return len(self.entries) - 1

    def end(self, index: int) -> None:
        with self.lock:
            what, started, _ = self.entries[index]
            self.entries[index] = (what, started, time.time())

    def snapshot(self) -> list[tuple[str, float, float]]:
        with self.lock:
            return list(self.entries)


def _timed(server: Any, timeline: Timeline, latency: Any) -> None:
    """Make ``server`` answer after ``latency()`` seconds and log each request's interval."""
    original = server.handler

    async def handler(req: Any) -> Any:
        index = timeline.begin(f"{req.method} {req.path}")
        response = original(req)
        if asyncio.iscoroutine(response):
            response = await response
        delay = response.delay_s + latency()
        response.delay_s = 0.0
        if delay:
            await asyncio.sleep(delay)
        timeline.end(index)
        return response

    server.handler = handler


@dataclass
class Trial:
    number: int
    qdrant: str  # "local" or "server"
    kind: str  # "first sync" or "update"
    target: str
    trigger: str = ""
    delay_s: float = 0.0  # from the run's start to the kill
    phase: str = ""
    pending_batches: int = 0
    points_at_kill: int = 0
    slots_left: int = 0  # Dagster pool slots the killed run still holds (nobody marks it failed)
    converged: bool = False
    problems: list[str] = field(default_factory=list)
    exit_code: int | None = None


@dataclass
class _Tenant:
    """What ``convergence_problems`` needs: the site the run must converge to."""

    site: Any


@dataclass
class _Env:
    database_url: str
    qdrant_path: str
    tenants: dict[str, _Tenant]


class Stage:
    """One trial's world: a fake Jira site, database, Qdrant and Dagster home."""

    def __init__(
        self, root: Path, embeddings: Any, qdrant_mode: str, latency: Latency, template: Path | None = None
    ) -> None:
        from etl_assets.core.sources.jira.sample import JiraSiteHandler, generate_sample_site
        from etl_assets.fakes.loopback import LoopbackServer, Request, Response

        self.root = root
        if template is not None:  # the state a first sync of this (deterministic) site left
            shutil.copytree(template, root, ignore=shutil.ignore_patterns("*.log", "tenants.yaml"))
        root.mkdir(parents=True, exist_ok=True)
        self.latency = latency
        self.slow = False
        self.site = generate_sample_site(seed=7, n_projects=5, n_issues=16)
        handler = JiraSiteHandler(self.site)

        def jira(req: Request) -> Response:
            status, headers, body = handler.handle(req.method, req.path, req.query, req.body)
            return Response(status=status, headers=headers, body=body)

        self.jira_log, self.embedding_log = Timeline(), Timeline()
        self.jira = LoopbackServer(jira)
        _timed(self.jira, self.jira_log, lambda: self.latency.jira_s if self.slow else 0.0)
        self.jira.start()
        self.embeddings = embeddings  # shared by all stages; Harness gives it this stage's timeline
        self.qdrant = None
        if qdrant_mode == "server":
            from etl_assets.fakes.qdrant_server import FakeQdrant

            self.qdrant = FakeQdrant(root / "qdrant-server").start()
        self.database_url = f"sqlite:///{root / 'etl.db'}"
        self.home = root / "dagster_home"
        self.home.mkdir(exist_ok=True)
        shutil.copy(ROOT / "dagster.yaml", self.home / "dagster.yaml")
        (root / "tenants.yaml").write_text(
            json.dumps(
                {
                    "tenants": [
                        {
                            "id": TENANT,
                            "jira": {
                                "url": self.jira.url,
                                "email_env": "CRASH_JIRA_EMAIL",
                                "token_env": "CRASH_JIRA_TOKEN",
                            },
                        }
                    ]
                }
            )
        )
        self.runs = 0

    @property
    def env(self) -> dict[str, str]:
        env = {
            "DAGSTER_HOME": str(self.home),
            "ETL_TENANTS_FILE": str(self.root / "tenants.yaml"),
            "DATABASE_URL": self.database_url,
            "QDRANT_PATH": str(self.root / "qdrant"),
            "ETL_EXECUTOR": "in_process",
            "EMBEDDING_PROVIDER": "openai",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": self.embeddings.url,
            "EMBEDDING_DIMENSIONS": str(DIMENSIONS),
            "EMBEDDING_BATCH_INPUTS": "4",
            "EMBEDDING_CONCURRENCY": "2",
            "CRASH_JIRA_EMAIL": EMAIL,
            "CRASH_JIRA_TOKEN": TOKEN,
        }
        if self.qdrant is not None:
            env["QDRANT_URL"] = self.qdrant.url
        return env

    def log(self) -> Path:
        self.runs += 1
        return self.root / f"run-{self.runs}.log"

    def check_env(self) -> _Env:
        return _Env(self.database_url, str(self.root / "qdrant"), {TENANT: _Tenant(self.site)})

    def problems(self) -> list[str]:
        from etl_assets.fakes.convergence import convergence_problems

        return convergence_problems(self.check_env(), TENANT, qdrant_url=self.qdrant.url if self.qdrant else None)

    def set_slow(self, slow: bool) -> None:
        self.slow = slow
        self.embeddings.latency_s = self.latency.embeddings_s if slow else 0.0
        if self.qdrant is not None:
            self.qdrant.latency_s = self.latency.qdrant_s if slow else 0.0
        from sqlalchemy import text

        from etl_assets.core.store.db import make_engine

        engine = make_engine(self.database_url)  # creates the schema on a fresh database
        with engine.begin() as conn:
            for table in ENTITY_TABLES:
                for op in ("INSERT", "UPDATE"):
                    name = f"slow_{table}_{op.lower()}"
                    conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
                    if slow:
                        conn.execute(
                            text(
                                f"CREATE TRIGGER {name} AFTER {op} ON {table} BEGIN SELECT count(*) FROM "
                                f"(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < "
                                f"{SLOW_ROW_ITERATIONS}) SELECT x FROM c); END"
                            )
                        )
        engine.dispose()

    def mutate(self, rng: random.Random) -> None:
        """What changes between two syncs: edits, new issues, a deletion, a rename, a vanished status."""
        site = self.site
        for issue in rng.sample(site.issues, 3):
            site.touch_issue(issue["key"], summary=f"{issue['fields']['summary']} (edited)")
        for n in range(2):
            site.add_issue(site.projects[n]["key"], summary=f"Added between syncs #{n}")
        site.delete_issue(rng.choice([i for i in site.issues if not i["fields"].get("subtasks")])["key"])
        site.rename_project(site.projects[-1]["id"], "Renamed between syncs")
        used = {i["fields"]["status"]["id"] for i in site.issues}
        unused = [s for s in site.statuses if s["id"] not in used]
        if unused:
            site.statuses.remove(rng.choice(unused))

    def stop(self) -> None:
        self.jira.stop()
        if self.qdrant is not None:
            self.qdrant.stop()


# -- phases --------------------------------------------------------------------------------------------


def _run_steps(home: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The newest run's steps with start/end (wall clock) from its event log, and its run id."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(limit=1)
        if not runs:
            return [], None
        starts: dict[str, float] = {}
        ends: dict[str, float] = {}
        for entry in instance.all_logs(runs[0].run_id):
            event = entry.dagster_event
            if event is None or not event.step_key:
                continue
            if event.event_type == dg.DagsterEventType.STEP_START:
                starts[event.step_key] = entry.timestamp
            elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                ends[event.step_key] = entry.timestamp
        return [{"step": k, "start": v, "end": ends.get(k)} for k, v in starts.items()], runs[0].run_id


def _upserts(stage: Stage, since: float) -> list[tuple[float, float]]:
    if stage.qdrant is None:
        return []
    return [
        (a, float("inf") if b is None else b)
        for m, p, _, a, b in list(stage.qdrant.log)
        if m == "PUT" and p.endswith("/points") and a >= since
    ]


def _started_steps(home: Path, known: set[str]) -> list[str]:
    """Step keys the newest run has started so far, read straight from its event-log file."""
    import sqlite3

    files = [f for f in (home / "history" / "runs").glob("*.db") if f.name != "index.db" and f.name not in known]
    if not files:
        return []
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{max(files, key=lambda f: f.stat().st_mtime)}?mode=ro", uri=True, timeout=0.05)
        ) as db:
            return [
                r[0]
                for r in db.execute(
                    "SELECT step_key FROM event_logs WHERE dagster_event_type = 'STEP_START' ORDER BY id"
                )
            ]
    except sqlite3.Error:  # the child holds the write lock at this instant: look again
        return []


def _classify(stage: Stage, t: float, since: float) -> str:
    """The phase a kill at ``t`` hit, from the event log and what the fakes had in flight."""
    steps, _ = _run_steps(stage.home)
    steps = [s for s in steps if s["start"] >= since]
    if not steps or t < min(s["start"] for s in steps):
        return "before the first step"
    open_steps = [s for s in steps if s["start"] <= t and (s["end"] is None or s["end"] > t)]
    if not open_steps:
        return "between steps (Dagster's bookkeeping)"
    step = open_steps[0]["step"]
    step_start = open_steps[0]["start"]

    def in_flight(entries: list[tuple[float, float]]) -> bool:
        return any(a <= t < b for a, b in entries)

    if step.startswith("jira__raw__"):
        fetching = in_flight([(a, b) for _, a, b in stage.jira_log.snapshot() if a >= step_start])
        return "raw: fetching a page" if fetching else "raw: landing transaction"
    if step.startswith("tables__"):
        return "table transaction"
    embeds = [(a, b) for w, a, b in stage.embedding_log.snapshot() if w.endswith("/embeddings") and a >= step_start]
    upserts = _upserts(stage, step_start)
    if in_flight(upserts):
        return "vectors: upsert in flight"
    answered = sum(1 for _, b in embeds if b <= t)
    upserted = sum(1 for a, _ in upserts if a <= t)
    if stage.qdrant is not None and answered > upserted:
        return "vectors: embedded, not yet upserted"
    if stage.qdrant is None and any(0 <= t - b < LOCAL_WRITE_S for _, b in embeds):
        return "vectors: embedded, local write pending"
    if in_flight(embeds):
        return "vectors: embedding in flight"
    return "vectors: reading, comparing or sweeping"


def _slots_left(home: Path) -> int:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return sum(
            len(instance.event_log_storage.get_concurrency_info(pool).claimed_slots) for pool in ("jira", "embeddings")
        )


def _pending_batches(url: str) -> int:
    from sqlalchemy import create_engine, func, select

    from etl_assets.core.store import schema

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            b = schema.raw_batches
            return conn.execute(select(func.count()).where(b.c.consumed_at.is_(None))).scalar_one()
    except Exception:  # noqa: BLE001 - killed before the schema existed
        return 0
    finally:
        engine.dispose()


def _points(stage: Stage) -> int:
    from etl_assets.fakes.convergence import read_points

    try:
        found = read_points(
            stage.check_env(), qdrant_url=stage.qdrant.url if stage.qdrant else None, with_vectors=False
        )
    except Exception:  # noqa: BLE001 - nothing there yet
        return 0
    return sum(len(c["points"]) for c in found.values())


# -- trials -------------------------------------------------------------------------------------------


class Harness:
    def __init__(self, workdir: Path, latency: Latency | None = None) -> None:
        from etl_assets.core.embeddings.tokens import cl100k
        from etl_assets.fakes.openai_server import FakeEmbeddings

        self.workdir = workdir
        self.latency = latency or Latency()
        self.embeddings = FakeEmbeddings(dimensions=1536, token_counter=lambda s: len(cl100k().encode(s))).start()
        self._embeddings_handler = self.embeddings.server.handler
        self.zygote = Zygote()
        self.templates: dict[str, Path] = {}

    def close(self) -> None:
        self.zygote.close()
        self.embeddings.stop()

    def _stage(self, name: str, qdrant_mode: str, template: Path | None = None) -> Stage:
        self.embeddings.server.handler = self._embeddings_handler
        stage = Stage(self.workdir / name, self.embeddings, qdrant_mode, self.latency, template)
        _timed(self.embeddings.server, stage.embedding_log, lambda: 0.0)
        return stage

    def _synced(self, qdrant_mode: str) -> Path:
        """A folder holding what one clean first sync leaves (made once per Qdrant mode)."""
        if qdrant_mode not in self.templates:
            stage = self._stage(f"synced-{qdrant_mode}", qdrant_mode)
            try:
                stage.set_slow(False)
                if self.zygote.run(stage.env, stage.log()) != 0 or stage.problems():
                    raise RuntimeError(f"the first sync of the template failed; see {stage.root}")
            finally:
                stage.stop()
            self.templates[qdrant_mode] = stage.root
        return self.templates[qdrant_mode]

    def _prepare(self, stage: Stage, kind: str, rng: random.Random) -> None:
        if kind == "update":
            stage.mutate(rng)
        stage.set_slow(True)

    def _trigger(self, stage: Stage, target: str, kind: str, rng: random.Random) -> tuple[str, Any, float]:
        """What to wait for (a description and a predicate on what was observed) and the offset after it."""
        first = kind == "first sync"
        lat = self.latency
        if target in ("raw landing", "table transaction"):
            prefix = "jira__raw__" if target == "raw landing" else "tables__"
            k = rng.randint(1, 4)
            offset = rng.uniform(0, 0.25 if target == "raw landing" else 0.45 if first else 0.15)
            return f"step {k} of {prefix}*", lambda o: sum(x.startswith(prefix) for x in o["steps"]) >= k, offset
        k = rng.randint(1, 12 if first else 2)
        if target == "embedding":
            return f"embedding request {k} sent", lambda o: len(o["embeds"]) >= k, rng.uniform(0, lat.embeddings_s)
        if target == "upsert" and stage.qdrant is not None:
            return f"upsert {k} sent", lambda o: len(o["upserts"]) >= k, rng.uniform(0, lat.qdrant_s)
        return (
            f"embedding request {k} answered",
            lambda o: sum(b <= o["now"] for _, b in o["embeds"]) >= k,
            rng.uniform(0, 0.03),
        )

    def _observe(self, stage: Stage, since: float, known_runs: set[str], steps: bool) -> dict[str, Any]:
        now = time.time()
        return {
            "now": now,
            "steps": _started_steps(stage.home, known_runs) if steps else [],  # the one costly look
            "embeds": [
                (a, b) for w, a, b in stage.embedding_log.snapshot() if w.endswith("/embeddings") and a >= since
            ],
            "upserts": _upserts(stage, since),
        }

    def trial(self, number: int, rng: random.Random) -> Trial:
        # Over any 20 consecutive trials every (target, Qdrant mode, kind) combination occurs once.
        qdrant_mode = ("server", "local")[number % 2]
        kind = ("first sync", "update")[(number // 2) % 2]
        target = TARGETS[number % len(TARGETS)]
        trial = Trial(number, qdrant_mode, kind, target)
        template = self._synced(qdrant_mode) if kind == "update" else None
        stage = self._stage(f"trial-{number:03d}", qdrant_mode, template)
        try:
            self._prepare(stage, kind, rng)
            what, reached, offset = self._trigger(stage, target, kind, rng)
            trial.trigger = what
            known = (
                {f.name for f in (stage.home / "history" / "runs").glob("*.db")}
                if (stage.home / "history").exists()
                else set()
            )
            since = time.time()
            pid = self.zygote.start(stage.env, stage.log())
            by_steps = target in ("raw landing", "table transaction")
            while not self.zygote.exited():
                if reached(self._observe(stage, since, known, by_steps)):
                    break
                time.sleep(0.005)
            killed_at = None
            if not self.zygote.exited():
                time.sleep(offset)
                killed_at = time.time()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)  # the child this trial started, and only its group
            trial.exit_code = self.zygote.wait()
            trial.delay_s = (killed_at or time.time()) - since
            time.sleep(max(self.latency.embeddings_s, self.latency.qdrant_s) + 0.05)  # let in-flight answers log
            if trial.exit_code == 0 or killed_at is None:
                trial.phase = "after the run (not killed)"
            else:
                trial.phase = _classify(stage, killed_at, since)
            trial.pending_batches = _pending_batches(stage.database_url)
            trial.points_at_kill = _points(stage)
            trial.slots_left = _slots_left(stage.home) if killed_at is not None else 0

            stage.set_slow(False)
            self.zygote.run(stage.env, stage.log(), RECONCILE)
            trial.problems = stage.problems()
            trial.converged = not trial.problems
        finally:
            stage.stop()
        if trial.converged:
            shutil.rmtree(stage.root, ignore_errors=True)
        return trial


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    """A temporary folder, in memory where the machine has /dev/shm: Dagster's SQLite storage
    commits every event, and on a disk that alone takes longer than the run's own work."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="crash-", dir=shm if shm.is_dir() else None) as path:
        yield path


def run_trials(
    trials: int | Sequence[int], seed: int, workdir: Path, *, latency: Latency | None = None, progress: bool = False
) -> list[Trial]:
    """Run kill-and-recover trials (``trials`` of them, or the numbered ones); failing trials keep their folder.

    A trial's number chooses its target phase, Qdrant mode and kind; its random choices come
    from ``seed`` and the number, so a trial is the same whichever others run with it.
    """
    numbers = list(range(trials)) if isinstance(trials, int) else list(trials)
    harness = Harness(workdir, latency)
    results = []
    if progress:
        print(format_table([], details=True).split("\n")[0], flush=True)
    try:
        for n in numbers:
            result = harness.trial(n, random.Random(f"{seed}/{n}"))
            results.append(result)
            if progress:
                print(_row(result), flush=True)
    finally:
        harness.close()
    return results


def _row(t: Trial) -> str:
    verdict = "yes" if t.converged else f"NO ({len(t.problems)} problems)"
    return (
        f"{t.number:>5}  {t.qdrant:<6}  {t.kind:<10}  {t.target:<17}  {t.trigger:<30}  {t.delay_s:>6.2f}s  "
        f"{t.phase:<48}  {t.pending_batches:>7}  {t.points_at_kill:>6}  {verdict}"
    )


def format_table(results: list[Trial], *, details: bool = False) -> str:
    lines = []
    if details:
        lines.append(
            f"{'trial':>5}  {'qdrant':<6}  {'kind':<10}  {'target':<17}  {'trigger':<30}  {'kill at':>7}  "
            f"{'phase hit':<48}  {'pending':>7}  {'points':>6}  converged"
        )
        lines += [_row(t) for t in results]
        lines.append("")
    by_phase: dict[str, list[Trial]] = defaultdict(list)
    for t in results:
        by_phase[t.phase].append(t)
    width = max([len("kill point"), *map(len, by_phase)])
    lines.append(f"{'kill point':<{width}}  {'trials':>6}  {'local':>5}  {'server':>6}  {'converged':>9}")
    order = ("raw", "table", "vectors", "between", "before", "after")
    for phase in sorted(by_phase, key=lambda p: (next(i for i, o in enumerate(order) if p.startswith(o)), p)):
        ts = by_phase[phase]
        kinds = Counter(t.qdrant for t in ts)
        lines.append(
            f"{phase:<{width}}  {len(ts):>6}  {kinds['local']:>5}  {kinds['server']:>6}  "
            f"{sum(t.converged for t in ts):>9}"
        )
    total = len(results)
    lines.append(
        f"{'all':<{width}}  {total:>6}  {sum(t.qdrant == 'local' for t in results):>5}  "
        f"{sum(t.qdrant == 'server' for t in results):>6}  {sum(t.converged for t in results):>9}"
    )
    lost = [p for t in results for p in t.problems]
    lines.append(
        f"lost after recovery: {len(lost)} problem(s)" + (": " + "; ".join(lost[:5]) if lost else " (nothing)")
    )
    held = [t for t in results if t.slots_left]
    if held:
        lines.append(
            f"Dagster: {len(held)} killed run(s) were left STARTED holding {sum(t.slots_left for t in held)} "
            "pool slot(s); only run monitoring (deploy/dagster.yaml) fails such runs and frees them"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1206)
    parser.add_argument("--workdir", type=Path, help="keep trial folders here (default: a temporary folder)")
    parser.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.zygote:
        _zygote()
        return 0
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(scratch_dir()))
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        print(f"{args.trials} trials, seed {args.seed}", flush=True)
        results = run_trials(args.trials, args.seed, workdir, progress=True)
        print()
        print(format_table(results))
        print(f"({time.perf_counter() - started:.0f}s)")
        failed = [t for t in results if not t.converged]
        if failed and args.workdir is None:
            print("rerun with --workdir to keep the folders of failed trials", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Latency", "Trial", "format_table", "run_trials"]
