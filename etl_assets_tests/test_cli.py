"""``etl-assets`` as an operator meets it: what the demo prints, what search refuses, one-line errors.

The commands run as subprocesses in a clean environment (no DAGSTER_HOME, database, Qdrant or
OpenAI settings of the machine, a data directory of their own), as on a fresh clone.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from etl_assets.cli import PROJECT_INSTANCE_YAML, display_width, fit, format_hits
from etl_assets.core.catalogue import CATALOGUE
from etl_assets.core.search import Hit
from etl_assets.core.settings import BUNDLED_TENANTS_FILE
from etl_assets.core.tenants import TenantRegistry

_DROP = (
    "DAGSTER_HOME",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "DATABASE_URL",
    "QDRANT_URL",
    "QDRANT_PATH",
    "ETL_DATA_DIR",
    "ETL_TENANTS_FILE",
    "VIRTUAL_ENV",
)

# The demo tenants' Jira administrator (the sample sites' first user): searches run as a Jira user.
ADMIN = "anna.schmidt@example.com"


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in _DROP and not k.startswith(("DAGSTER_PG", "EMBEDDING_", "ETL_"))
    }
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONIOENCODING="utf-8", **extra)
    return env


def _cli(*args: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# -- formatting ----------------------------------------------------------------------------------------


def test_display_width_counts_wide_and_combining_characters():
    assert display_width("login") == 5
    assert display_width("日本語") == 6
    assert display_width("e\u0301") == 1  # e + combining acute accent
    assert display_width("ログイン失敗 ok") == 15
    wcwidth = pytest.importorskip("wcwidth")  # an independent count where it is installed
    for text in ("日本語のタイトル", "Zürich e\u0301", "混合 mixed 文字", "한국어 제목"):
        assert display_width(text) == wcwidth.wcswidth(text), text


def test_fit_cuts_wide_text_at_a_character_boundary():
    assert fit("日本語テキスト", 5) == "日本…"  # 4 columns + the ellipsis
    assert fit("日本語テキスト", 6) == "日本… "  # a wide character does not fit in the 1 column left
    assert fit("short", 8) == "short   "
    assert fit("two\nlines\tand  spaces", 30).rstrip() == "two lines and spaces"
    assert all(display_width(fit("日本語テキスト", w)) == w for w in range(2, 20))


def test_search_results_line_up_with_cjk_titles():
    hits = [
        Hit(
            0.91,
            "1",
            {"key": "MOB-1", "summary": "Login fails with unicode password", "project_key": "MOB", "status": "Done"},
        ),
        Hit(
            0.85,
            "2",
            {
                "key": "JP-12",
                "summary": "ログインできない（パスワードに絵文字）",
                "project_key": "JP",
                "status": "未着手",
            },
        ),
        Hit(
            0.7,
            "3",
            {
                "key": "CN-3",
                "summary": "登录失败：密码包含特殊字符，导致无法同步" * 3,
                "project_key": "CN",
                "status": "In Progress",
            },
        ),
        Hit(0.5, "4", {"key": "KR-100", "summary": "로그인 실패", "project_key": "KR", "status": "Done"}),
    ]
    lines = format_hits(hits, title_width=40)
    header, rows = lines[0], lines[1:]
    assert header.split() == ["score", "key", "title", "project", "status"]
    assert len(rows) == len(hits)
    # Every row's project column starts at the same terminal column as the header's.
    start = display_width(header[: header.index("project")])
    for row, hit in zip(rows, hits, strict=True):
        project = hit.payload["project_key"]
        at = re.search(rf"  {project}  ", row)
        assert at, row
        assert display_width(row[: at.start() + 2]) == start, row
    # The long title was cut to the column, with an ellipsis, and no row is wider than the header allows.
    assert "…" in rows[2]
    assert max(display_width(r) for r in rows) <= display_width(header) + len("In Progress")


def test_work_item_types_show_no_empty_or_repeated_columns():
    hits = [Hit(0.4, "10001", {"name": "Bug"}), Hit(0.3, "10002", {"name": "Task"})]
    lines = format_hits(hits)
    assert lines[0].split() == ["score", "key"]
    assert [line.split() for line in lines[1:]] == [["0.400", "Bug"], ["0.300", "Task"]]


# -- refusals and one-line errors ----------------------------------------------------------------------


def test_search_refuses_a_tenant_the_registry_does_not_know(tmp_path):
    known = TenantRegistry.load(BUNDLED_TENANTS_FILE).ids
    assert "3" not in known
    done = _cli("search", "login", "--tenant", "3", "--unrestricted", cwd=tmp_path, env=_env())
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "unknown tenant '3'" in line
    assert all(tenant in line for tenant in known), line
    assert not (tmp_path / ".data").exists()  # refused before anything was opened or created


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_search_refuses_an_empty_query(tmp_path, query):
    done = _cli("search", query, "--tenant", "1", "--unrestricted", cwd=tmp_path, env=_env())
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert "query is empty" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--field", "Story Points"), "custom field filter 'Story Points' is not NAME=VALUE"),
        (("--field", "Team=Falcon", "--source", "github"), "--field filter Jira issues only"),
    ],
)
def test_search_refuses_a_malformed_custom_field_filter_before_opening_anything(tmp_path, args, message):
    done = _cli("search", "login", "--tenant", "1", "--unrestricted", *args, cwd=tmp_path, env=_env())
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert message in line
    assert not (tmp_path / ".data").exists()


def test_search_entities_come_from_the_catalogue(capsys):
    from etl_assets.cli import build_parser

    parser = build_parser()
    for spec in CATALOGUE:
        assert (
            parser.parse_args(["search", "q", "--tenant", "1", "--unrestricted", "--entity", spec.name]).entity
            == spec.name
        )
    with pytest.raises(SystemExit) as refused:
        parser.parse_args(["search", "q", "--tenant", "1", "--unrestricted", "--entity", "sprints"])
    assert refused.value.code == 2
    assert ", ".join(repr(spec.name) for spec in CATALOGUE) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "argv", "names"),
    [
        (
            {"ETL_TENANTS_FILE": "missing/tenants.yaml"},
            ("search", "login", "--tenant", "1", "--unrestricted"),
            "ETL_TENANTS_FILE",
        ),
        ({"EMBEDDING_CONCURRENCY": "0"}, ("demo",), "EMBEDDING_CONCURRENCY"),
        ({"QDRANT_URL": "ftp://qdrant.internal"}, ("home",), "QDRANT_URL"),
    ],
)
def test_a_configuration_error_is_one_line_and_exit_2(tmp_path, extra, argv, names):
    done = _cli(*argv, cwd=tmp_path, env=_env(**extra))
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("etl-assets: ") and names in line, line
    assert done.stdout == ""


def test_home_is_created_with_the_projects_instance_settings(tmp_path):
    done = _cli("home", cwd=tmp_path, env=_env())
    assert done.returncode == 0, done.stderr
    home = tmp_path / ".data" / "dagster_home"  # ETL_DATA_DIR's default: ./.data
    assert done.stdout == f"{home}\n"
    assert (home / "dagster.yaml").read_text() == PROJECT_INSTANCE_YAML.read_text()

    # An instance the operator already set up is used as it is.
    own = tmp_path / "own_home"
    own.mkdir()
    (own / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    done = _cli("home", cwd=tmp_path, env=_env(DAGSTER_HOME=str(own)))
    assert done.stdout == f"{own}\n"
    assert (own / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


def test_a_failed_demo_run_is_one_line_naming_the_step_and_where_the_logs_are(tmp_path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n"
        "  - id: acme\n"
        "    name: Acme\n"
        "    jira: {url: 'https://acme.example.invalid', email_env: ACME_JIRA_EMAIL, token_env: ACME_JIRA_TOKEN}\n"
    )
    # An OpenAI-compatible provider that is never reached: the run fails before any vector step.
    env = _env(
        ETL_DATA_DIR=str(tmp_path / "data"),
        ETL_TENANTS_FILE=str(tenants),
        EMBEDDING_PROVIDER="openai",
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
    )
    done = _cli("demo", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert re.search(r"step jira/raw/raw_jira_\w+ failed: TenantConfigError: tenant 'acme': Jira credentials", line)
    assert "./dev.sh ui → Runs" in line and "dagster dev" not in line
    assert f"DAGSTER_HOME={tmp_path / 'data' / 'dagster_home'}" in line


def test_a_run_that_fails_before_any_step_names_the_cause(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = _env(
        ETL_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=f"postgresql+psycopg2://etl:SECRETVALUE@127.0.0.1:{closed}/etl",
        EMBEDDING_PROVIDER="openai",
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
    )
    done = _cli("demo", "--tenant", "2", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    # The database resource failed to open: the line says so, not Dagster's "an exception was thrown".
    assert "the run failed: database postgresql+psycopg2://etl:***@127.0.0.1" in line, line
    assert "DATABASE_URL" in line and "SECRETVALUE" not in line and "./dev.sh ui → Runs" in line


# -- the demo and a search, end to end -----------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``etl-assets demo`` for the smaller bundled tenant, and the environment it ran in."""
    root = tmp_path_factory.mktemp("cli_demo")
    env = _env(ETL_DATA_DIR=str(root / "data"))
    done = _cli("demo", "--tenant", "2", cwd=root, env=env, timeout=900)
    return done, root, env


@pytest.mark.slow
def test_the_demo_prints_a_line_per_step_and_the_table(demo):
    from etl_assets.defs.names import asset_keys

    done, _, _ = demo
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Dagster's event log stays in the instance (for the UI), not on the terminal.
    assert "DEBUG" not in done.stdout + done.stderr
    assert "Loading weights" not in done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    steps = re.findall(r"^tenant 2  (\S+)\s+✓\s+[\d.]+s  \d+ (?:records|rows|points)", done.stdout, re.M)
    expected = {key.to_user_string() for spec in CATALOGUE for key in asset_keys(spec)}
    assert sorted(steps) == sorted(expected)
    for noise in ("Event loop is closed", "Task exception was never retrieved", "Traceback"):
        assert noise not in done.stdout, noise
    table = re.findall(r"^2\s+(\w+)\s+(\d+)\s+(\d+)\s+client_2_\w+$", done.stdout, re.M)
    assert [entity for entity, *_ in table] == [spec.name for spec in CATALOGUE]
    for entity, live, points in table:
        assert int(points) >= int(live), (entity, live, points)  # long issues: chunks
        if entity in ("projects", "wits", "statuses", "issues"):  # the sample Jira site has each
            assert int(live) > 0, (entity, live, points)
    # One screen: the steps, the closing table and a few lines around them.
    assert len(lines) <= len(steps) + len(table) + 10, done.stdout


@pytest.mark.slow
def test_search_after_the_demo_prints_a_header_and_the_hits(demo):
    done, root, env = demo
    assert done.returncode == 0
    hits = _cli(
        "search", "login fails with unicode password", "--tenant", "2", "--as", ADMIN, "-k", "3", cwd=root, env=env
    )
    assert hits.returncode == 0, hits.stderr
    assert hits.stderr == ""  # no model-loading progress bar
    lines = hits.stdout.splitlines()
    assert lines[0].split()[:3] == ["score", "key", "title"]
    # at most -k hits; fewer when the rest are no good match (calibrated thresholds, README "Hybrid retrieval")
    assert 1 + 1 <= len(lines) <= 1 + 3, lines
    assert all(re.match(r"^\d+\.\d{3}  \S+", line) for line in lines[1:]), lines
    # each about signing in (the local model, as the demo indexed with it)
    assert all(re.search(r"(?i)password|sign.?in|log.?in", line) for line in lines[1:]), lines


@pytest.mark.slow
def test_search_runs_as_a_jira_user_sees_only_what_they_may_open_and_refuses_an_unknown_one(demo):
    from etl_assets.core.sources.jira.sample import permission_fixture_for
    from etl_assets.core.tenants import TenantRegistry
    from etl_assets_tests.permission_oracle import oracle_can_see

    done, root, env = demo
    assert done.returncode == 0
    url = (
        TenantRegistry.load(Path(__file__).resolve().parents[1] / "etl_assets" / "tenants.yaml")
        .get("2")
        .section("jira")
        .url
    )
    fx = permission_fixture_for(url)
    assert fx is not None
    loner = min(u for u in fx.users if not any(u in g["members"] for g in fx.groups.values()))
    may_open = {i["key"] for i in fx.issues if oracle_can_see(fx, loner, i, None)}
    query = ("search", "login fails with unicode password", "--tenant", "2", "-k", "20", "--mode", "sparse")

    def keys(done: subprocess.CompletedProcess[str]) -> set[str]:
        assert done.returncode == 0, done.stderr
        return {line.split()[1] for line in done.stdout.splitlines()[1:] if re.match(r"^\d+\.\d{3}  ", line)}

    admin = keys(_cli(*query, "--as", ADMIN, cwd=root, env=env))
    theirs = keys(_cli(*query, "--as", fx.users[loner]["emailAddress"], cwd=root, env=env))
    assert theirs <= may_open and admin - may_open, (admin, theirs)  # the same query, two answers
    operator = _cli(*query, "--unrestricted", cwd=root, env=env)
    assert keys(operator) >= admin and "unrestricted search of tenant 2" in operator.stderr

    unknown = _cli(*query, "--as", "nobody@example.com", cwd=root, env=env)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "tenant '2'" in unknown.stderr and "nobody@example.com" in unknown.stderr
    neither = _cli(*query, cwd=root, env=env)
    assert neither.returncode == 2 and "--as" in neither.stderr and "--unrestricted" in neither.stderr


@pytest.mark.slow
def test_a_custom_field_filter_the_tenant_cannot_serve_is_one_line(demo):
    done, root, env = demo
    assert done.returncode == 0
    # The bundled tenant 2 lists no custom fields: its issues collection has none to filter on.
    refused = _cli("search", "login", "--tenant", "2", "--as", ADMIN, "--field", "Story Points>=5", cwd=root, env=env)
    assert refused.returncode == 2 and refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert "cannot filter on custom field 'Story Points': client_2_issues has no payload index for it" in line
    assert "(filterable: none yet)" in line and "a custom field the tenant lists gets one" in line


@pytest.mark.slow
def test_the_search_the_demo_suggests_runs_as_printed(demo):
    done, root, env = demo
    assert done.returncode == 0
    hint = next(line for line in done.stdout.splitlines() if line.startswith("Try a search:"))
    args = shlex.split(hint.split(":", 1)[1])
    assert args[:2] == ["etl-assets", "search"] and "--as" in args  # a search runs as a Jira user
    ran = _cli(*args[1:], cwd=root, env=env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0].split()[:2] == ["score", "key"] and len(ran.stdout.splitlines()) > 1
