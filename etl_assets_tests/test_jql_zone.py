"""The incremental watermark is right in any profile time zone of the Jira API user.

JQL reads ``updated >= "yyyy-MM-dd HH:mm"`` as wall time in that user's zone (``GET /myself``
``timeZone``). The sample site reads it the same way (the later reading where a DST change
makes the wall time ambiguous), so a literal written in the wrong zone misses changes (a zone
west of UTC) or re-reads hours of them (east of UTC), and these tests see it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import create_engine

from etl_assets.core.records import FetchRequest
from etl_assets.core.sources.jira.client import JiraClient
from etl_assets.core.sources.jira.jql import jql_datetime, tenant_jql, user_zone
from etl_assets.core.sources.jira.sample import format_jira_timestamp, generate_sample_site, run_jql
from etl_assets.core.sources.jira.sample.transport import sample_transport
from etl_assets.core.sources.jira.source import JiraSiteConfig
from etl_assets.core.sources.jira.specs import ISSUES
from etl_assets.core.store import ops
from etl_assets.core.tenants import Tenant
from etl_assets.fakes.loopback import Fault
from etl_assets_tests.test_graph import table_rows

ISSUE_ASSETS = "key:jira/raw/raw_jira_issues or key:tables/issues_table or key:vectors/issues_vectors"
RAW = "jira__raw__raw_jira_issues"
OVERLAP = timedelta(minutes=10)  # RawFetchConfig.overlap_minutes' default

LA, KOLKATA = "America/Los_Angeles", "Asia/Kolkata"
# 2025-11-02 09:00 UTC: Los Angeles falls back from 02:00 PDT to 01:00 PST (01:00-02:00 twice);
# 2026-03-08 10:00 UTC: it springs forward from 02:00 PST to 03:00 PDT (02:00-03:00 never).
FALL_BACK = datetime(2025, 11, 2, 9, 0, tzinfo=UTC)
SPRING_FORWARD = datetime(2026, 3, 8, 10, 0, tzinfo=UTC)


def readings(literal: str, zone: str) -> list[datetime]:
    """Every instant Jira could take the literal for in ``zone`` (two around a DST change)."""
    wall = datetime.strptime(literal, "%Y-%m-%d %H:%M")
    return sorted({wall.replace(tzinfo=ZoneInfo(zone), fold=f).astimezone(UTC) for f in (0, 1)})


@pytest.mark.parametrize("zone", ["UTC", LA, KOLKATA, "Australia/Lord_Howe", "Pacific/Kiritimati"])
@pytest.mark.parametrize("around", [FALL_BACK, SPRING_FORWARD, datetime(2026, 4, 5, 15, 0, tzinfo=UTC)])
def test_the_literal_is_never_after_the_instant_and_at_most_an_hour_before(zone, around):
    # Every 7 minutes and 13 seconds across three hours each side of a transition (Lord Howe
    # moves by 30 minutes, in April and October; Kiritimati is UTC+14).
    step = timedelta(minutes=7, seconds=13)
    for n in range(-25, 26):
        moment = around + n * step
        literal = jql_datetime(moment, ZoneInfo(zone))
        got = readings(literal, zone)
        assert got[-1] <= moment, f"{zone} {moment}: {literal!r} may be read as {got[-1]} (a miss)"
        assert got[0] > moment - timedelta(minutes=61), f"{zone} {moment}: {literal!r} re-reads too much"


def test_the_literal_at_the_fall_back_steps_back_out_of_the_repeated_hour():
    moment = datetime(2025, 11, 2, 8, 40, tzinfo=UTC)  # 01:40 PDT, the first of two 01:40s
    assert jql_datetime(moment, ZoneInfo(LA)) == "2025-11-02 00:40"
    assert jql_datetime(moment + timedelta(hours=1), ZoneInfo(LA)) == "2025-11-02 01:40"  # 01:40 PST: the later
    assert jql_datetime(moment, ZoneInfo(KOLKATA)) == "2025-11-02 14:10"
    assert jql_datetime(moment, None) == "2025-11-01 20:40"  # zone unknown: 12 h, the west-most offset


def tenant(url: str) -> Tenant:
    return Tenant("acme", "Acme", {"jira": JiraSiteConfig(url=url, email_env="E", token_env="T")})


def test_the_sample_site_reads_date_literals_in_its_users_zone():
    site = generate_sample_site(n_projects=3, n_issues=12)
    site.time_zone = LA
    stamp = datetime(2026, 1, 15, 20, 30, tzinfo=UTC)  # 12:30 PST
    site.issues[0]["fields"]["updated"] = format_jira_timestamp(stamp)
    hits = {i["key"] for i in run_jql(site, 'updated >= "2026-01-15 12:30"')}
    assert site.issues[0]["key"] in hits
    assert site.issues[0]["key"] not in {i["key"] for i in run_jql(site, 'updated >= "2026-01-15 12:31"')}
    assert site.issues[0]["key"] in {i["key"] for i in run_jql(site, 'updated = "2026-01-15 12:30"')}


@pytest.mark.parametrize("zone", [LA, KOLKATA])
def test_the_zone_comes_from_myself(zone):
    expected = ZoneInfo(zone)
    site = generate_sample_site(n_projects=3, n_issues=12)
    site.time_zone = zone
    sent: list[httpx.Request] = []
    with httpx.Client(
        base_url=site.base_url, transport=sample_transport(site), event_hooks={"request": [sent.append]}
    ) as http:
        client = JiraClient(http, "acme", site.base_url)
        assert user_zone(client) == expected
        sent.clear()
        since = datetime(2026, 1, 15, 20, 30, tzinfo=UTC)
        pages = list(ISSUES.fetch(client, FetchRequest(tenant(site.base_url), since=since)))
    paths = [r.url.path for r in sent]
    # Once per fetch, before the search that needs it (after the field listing that opens a fetch).
    assert paths.count("/rest/api/3/myself") == 1
    assert paths.index("/rest/api/3/myself") < paths.index("/rest/api/3/search/jql")
    jql = pages[-1].params["body"]["jql"]
    assert jql == tenant_jql(tenant(site.base_url), since=since, zone=expected)
    assert f'updated >= "{jql_datetime(since, expected)}"' in jql


def test_a_zone_we_do_not_know_widens_the_watermark(caplog):
    site = generate_sample_site(n_projects=3, n_issues=12)
    site.time_zone = "Mars/Olympus"  # what /myself reports; the site's own JQL is not asked here
    with httpx.Client(base_url=site.base_url, transport=sample_transport(site)) as http:
        assert user_zone(JiraClient(http, "acme", site.base_url)) is None
    assert "'Mars/Olympus' is not a known IANA zone" in caplog.text
    since = datetime(2026, 1, 15, 20, 30, tzinfo=UTC)
    assert 'updated >= "2026-01-15 08:30"' in tenant_jql(tenant(site.base_url), since=since, zone=None)


def myself_requests(site) -> int:
    return sum(1 for _, path in site.requests if path.endswith("/rest/api/3/myself"))


def _reset_timestamps(site, watermark: datetime) -> dict:
    """Every issue well before ``watermark`` except one at it; returns that one."""
    for n, issue in enumerate(site.issues):
        stamp = watermark - timedelta(hours=3, minutes=n)
        issue["fields"]["updated"] = format_jira_timestamp(stamp)
        issue["fields"]["created"] = format_jira_timestamp(stamp - timedelta(days=1))
    latest = site.issues[-1]
    latest["fields"]["updated"] = format_jira_timestamp(watermark)
    return latest


@pytest.mark.parametrize(
    ("zone", "watermark", "later"),
    [
        # 01:50 PDT, the first of the repeated hour; the change at 01:51 PDT
        (LA, FALL_BACK - timedelta(minutes=10), timedelta(minutes=1)),
        # 01:58 PST; the change at 03:03 PDT, after the clocks jumped
        (LA, SPRING_FORWARD - timedelta(minutes=2), timedelta(minutes=5)),
        # 15:30 IST
        (KOLKATA, datetime(2026, 3, 8, 10, 0, tzinfo=UTC), timedelta(minutes=1)),
    ],
    ids=["los-angeles-fall-back", "los-angeles-spring-forward", "kolkata"],
)
def test_an_incremental_sync_finds_exactly_the_changed_issues_in_the_users_zone(env, zone, watermark, later):
    site = env.tenants["1"].site
    site.time_zone = zone
    at_watermark = _reset_timestamps(site, watermark)
    assert env.materialize("1").success
    engine = create_engine(env.database_url)
    try:
        assert ops.read_sync_state(engine, "1", "issues").watermark == watermark
    finally:
        engine.dispose()
    changed = next(i for i in site.issues if i is not at_watermark and not i["fields"].get("parent"))
    site.touch_issue(changed["key"], summary="Changed right after the watermark", updated=watermark + later)
    before = myself_requests(site)

    result = env.materialize("1", ISSUE_ASSETS)

    raw = result.asset_materializations_for_node(RAW)[0].metadata
    # the change, and the issue at the watermark (inside the overlap): nothing missed, no hours re-read
    assert raw["records"].value == 2
    assert myself_requests(site) - before == 1
    rows = {r["external_id"]: r for r in table_rows(env, ISSUES, "1")}
    assert rows[changed["id"]]["summary"] == "Changed right after the watermark"
    table = result.asset_materializations_for_node("tables__issues_table")[0].metadata
    assert table["updated"].value == 1 and table["unchanged"].value == 1


def test_a_site_without_myself_widens_the_watermark_and_misses_nothing(env):
    site = env.tenants["1"].site
    site.time_zone = LA
    watermark = datetime(2026, 3, 8, 10, 0, tzinfo=UTC)
    _reset_timestamps(site, watermark)
    assert env.materialize("1").success
    changed = site.issues[0]
    site.touch_issue(changed["key"], summary="Changed while /myself is down", updated=watermark + timedelta(minutes=1))
    env.tenants["1"].server.faults.append(Fault.respond(404, {"errorMessages": ["nope"]}, path="/rest/api/3/myself"))
    result = env.materialize("1", ISSUE_ASSETS)
    assert result.success
    # the literal is 12 h before the watermark less the overlap (UTC wall time): read in Los Angeles,
    # 4 h before it, so every issue here (3 h back and less) is read again, the change among them
    raw = result.asset_materializations_for_node(RAW)[0].metadata
    assert raw["records"].value == len(site.issues)
    rows = {r["external_id"]: r for r in table_rows(env, ISSUES, "1")}
    assert rows[changed["id"]]["summary"] == "Changed while /myself is down"
