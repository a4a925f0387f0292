"""Dagster's own command lines on a broken configuration: one line naming the problem, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from etl_assets.definitions import _is_server_process

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_dg_launch_with_a_bad_tenants_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # `dg launch` loads the definitions in process; `dagster job list` and the like load them in a
    # gRPC code server, which keeps the exception (see the test below).
    argv = [str(BIN / "dg"), "launch", "--assets", "*", "--partition", "1"]
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text('tenants:\n  - id: "bad id"\n    jira:\n      url: sample://x\n', encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    env = {
        **os.environ,
        "ETL_TENANTS_FILE": str(tenants),
        "ETL_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(home),
        "VIRTUAL_ENV": str(BIN.parent),
    }
    proc = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    ours = [line for line in proc.stderr.splitlines() if line.startswith("etl-assets:")]
    assert len(ours) == 1, proc.stderr[-2000:]
    assert str(tenants) in ours[0] and "'bad id'" in ours[0]


def test_server_processes_keep_the_exception_for_the_ui() -> None:
    # A code server shows a load error in the UI; only one-shot commands turn it into exit 2.
    assert _is_server_process(["dagster", "api", "grpc", "--port", "4000"])
    assert _is_server_process(["dagster", "code-server", "start"])
    assert _is_server_process(["dagster", "dev"])
    assert not _is_server_process(["dg", "launch", "--assets", "*"])
    assert not _is_server_process(["dagster", "asset", "materialize", "-m", "etl_assets.definitions"])
