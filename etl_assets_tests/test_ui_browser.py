"""The UI in a browser: open the webserver, find the asset graph, click Materialize for a tenant
partition, and wait until the run shows success.

Headless Chromium from Debian's ``chromium`` package, driven by Playwright (test tools cannot
download their own browser here). The deployment is the real one: dagster-webserver and
dagster-daemon with PostgreSQL instance storage and the queued run coordinator. Screenshots go
to ``artifacts/ui/`` (gitignored) for a person to look at.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from etl_assets_tests import procs
from etl_assets_tests.test_deployment_e2e import ALL_KEYS as ALL_ASSET_KEYS
from etl_assets_tests.test_deployment_e2e import assert_tenant_synced, fresh_deployment

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = procs.PROJECT_ROOT / "artifacts" / "ui"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} not found (apt-get install chromium; ./dev.sh test installs it when run as root)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " — CI must run the browser test", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[procs.Deployment, object]]:
    _require_chromium()
    with fresh_deployment(tmp_path_factory, "ui") as (env, _, process_env, running):
        # Dagster's tables first: a webserver and a daemon that both find an empty database race
        # to create them (see the e2e fixture).
        migrate = subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "instance", "migrate"],
            env=dict(process_env),
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
        deployment = procs.start_deployment(running, env=process_env).wait_ready()
        yield deployment, env


@pytest.fixture
def page(tmp_path: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 2560, "height": 1600},  # room for every asset node at a readable zoom
        )
        context.set_default_timeout(30_000)
        try:
            yield context.new_page()
        finally:
            context.close()


def test_materialize_a_tenant_partition_from_the_asset_graph(deployed, page):
    deployment, env = deployed
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{deployment.url}/asset-groups", wait_until="domcontentloaded")
    page.get_by_text("Global asset lineage").wait_for()
    # The graph opens with one node per group; expand them to see every asset.
    for group in ("jira_raw", "tables", "vectors"):
        page.get_by_text(group, exact=True).first.wait_for()
    page.locator("[aria-label=settings]").last.click()
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.keyboard.press("Escape")
    # Expanded, the assets no longer fit one screen (nodes off screen are not drawn): the first
    # nodes are checked here, and the dialog below names how many assets "Materialize all" covers.
    page.get_by_text("raw_jira_issues", exact=True).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "01-asset-graph.png"))

    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(f"Launch runs to materialize {len(ALL_ASSET_KEYS)} assets").wait_for()  # every asset
    dialog.get_by_text("Select a partition or create one").click()
    # Partitions are the tenant ids; pick tenant "1".
    page.get_by_role("menuitem").filter(has=page.get_by_text("1", exact=True)).first.click()
    dialog.get_by_text("Launch runs to materialize").click()  # close the partition picker
    page.screenshot(path=str(ARTIFACTS / "02-materialize-dialog.png"))
    dialog.get_by_role("button", name="Launch 1 run").click()

    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    toast.wait_for()
    short_id = re.search(r"[0-9a-f]{8}", toast.inner_text()).group(0)  # type: ignore[union-attr]
    page.get_by_role("link", name="View").first.click()
    page.wait_for_url(re.compile(rf"/runs/{short_id}[0-9a-f-]*"))
    run_id = page.url.rstrip("/").split("/runs/")[1].split("?")[0]

    # The run page follows the run live; the daemon dequeues it and a run worker executes it.
    page.get_by_text("Success", exact=True).first.wait_for(timeout=240_000)
    page.screenshot(path=str(ARTIFACTS / "03-run-success.png"), full_page=True)

    run = deployment.run(run_id)
    assert run["status"] == "SUCCESS", deployment.procs.logs()
    assert {t["key"]: t["value"] for t in run["tags"]}["dagster/partition"] == "1"
    assert_tenant_synced(env, "1")  # type: ignore[arg-type]
    page.goto(f"{deployment.url}/asset-groups", wait_until="domcontentloaded")
    page.get_by_text("Global asset lineage").wait_for()
    page.screenshot(path=str(ARTIFACTS / "04-asset-graph-after.png"))
