"""What makes a sample issue a whole document: comments, history, links, attachments, rich ADF.

:func:`enrich` runs after the generator has built the issues and draws from its own seeded
random generator, so the same arguments always give the same site. It plants a few facts
that only a comment, or only the history, states; :func:`document_queries` labels natural
queries with the issues that hold them (the retrieval tests' comment-only queries).

Comments are stored complete on the issue (``fields.comment``); the REST handler embeds only
the first :data:`EMBEDDED_COMMENTS` of them in an issue, as Jira does, and serves the rest on
``GET /rest/api/3/issue/{id}/comment``. The changelog lives beside the fields
(``issue["changelog"]``) and is served with ``expand=changelog``.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from etl_assets.core.sources.jira.sample.adf_nodes import paragraphs_doc
from etl_assets.core.sources.jira.sample.site import SITE_NOW, JiraSite, format_jira_timestamp, stored_datetime

#: Comments an issue embeds in a search result; the rest are paged.
EMBEDDED_COMMENTS = 20
#: Comments of the one long discussion of the default site (more than one page of 100).
LONG_THREAD = 120
# Histories the search embeds with expand=changelog (Jira: 100); a longer changelog is paged on
# GET /issue/{id}/changelog. One sample issue has more (see _long_changelog).
EMBEDDED_HISTORIES = 10
LONG_CHANGELOG_CHURN = 24  # assignee changes before that issue's status path

# (comment text, a query worded unlike it): each planted on one issue, said nowhere else.
COMMENT_FACTS: tuple[tuple[str, str], ...] = (
    (
        "Root cause found: the nightly invoice archiving cron job held an exclusive lock on the ledger "
        "table for forty minutes, so every write in that window timed out.",
        "ledger table locked by the nightly archiving job",
    ),
    (
        "Workaround for affected customers: open the browser developer tools, unregister the service "
        "worker and clear its cache, then reload the page twice.",
        "unregistering the service worker as a workaround",
    ),
    (
        "Confirmed with the vendor: their webhook gateway silently drops request bodies larger than "
        "256 kilobytes and still answers 200.",
        "vendor gateway discards big webhook payloads without an error",
    ),
    (
        "Our load balancer closes idle connections after 60 seconds while the report generation needs "
        "about 75 seconds before the first byte.",
        "load balancer idle timeout shorter than report generation",
    ),
    (
        "Legal approved keeping the audit trail for seven years instead of purging it after ninety days.",
        "legal sign-off on seven year audit retention",
    ),
    (
        "Pairing session result: the flaky test only passes when the CI runner's system time zone is UTC.",
        "intermittent test failure caused by the build agent time zone",
    ),
    (
        "We rolled the feature flag back to ten percent after the crash rate on Android 14 phones doubled.",
        "feature flag reduced after Android crash spike",
    ),
    (
        "The status page DNS record still pointed at the decommissioned CDN, which is why it showed yesterday's data.",
        "status page served stale data from the old content delivery network",
    ),
    (
        "Three enterprise renewals this quarter depend on this fix, customer success asked us to "
        "prioritise it above the roadmap work.",
        "contract renewals waiting on this bug",
    ),
    (
        "The warehouse scanner firmware 3.2 sends the barcode twice when the battery is below fifteen percent.",
        "handheld scanner duplicates barcodes on low battery",
    ),
)

#: A comment only developers may see: it must never reach the index.
RESTRICTED_FACT = "Internal only: the staging database credentials were rotated after the contractor left."

_FILLER = (
    "Thanks, I can reproduce this on {host}.",
    "Adding the logs from this morning's occurrence.",
    "Is this still happening after the {version} deploy?",
    "Lowering the priority until we hear back from the customer.",
    "I had a look, the fix looks straightforward. Taking it.",
    "Moved to the next sprint, we ran out of capacity.",
    "Could you attach a screenshot of the error?",
    "Same problem reported by another customer today.",
    "Deployed to staging, please verify.",
    "Verified on staging, closing once it is in production.",
)
_HOSTS = ("app-eu-1", "app-us-1", "worker-3", "edge-fra-2")
_VERSIONS = ("5.1", "5.2", "2026.1")
_LINK_TYPES = (
    ("10000", "Blocks", "is blocked by", "blocks"),
    ("10001", "Duplicate", "is duplicated by", "duplicates"),
    ("10003", "Relates", "relates to", "relates to"),
)
_FILES = (
    ("screenshot.png", "image/png"),
    ("server.log", "text/plain"),
    ("export.csv", "text/csv"),
    ("trace.har", "application/json"),
    ("invoice-sample.pdf", "application/pdf"),
)


def _stamp(value: datetime) -> str:
    return format_jira_timestamp(min(value, SITE_NOW))


def comment_obj(
    site: JiraSite,
    issue: dict[str, Any],
    n: int,
    text: str | dict[str, Any],
    author: dict[str, Any] | None,
    created: datetime,
    *,
    visibility: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A comment as Jira Cloud returns one (``author`` None: a deleted user, no account)."""
    cid = str(int(issue["id"]) * 1000 + n)
    stamp = _stamp(created)
    who = (
        {k: author[k] for k in ("self", "accountId", "avatarUrls", "displayName", "active", "timeZone", "accountType")}
        if author
        else {"displayName": "Former user", "active": False}
    )
    out: dict[str, Any] = {
        "self": f"{site.base_url}/rest/api/3/issue/{issue['id']}/comment/{cid}",
        "id": cid,
        "author": who,
        "body": paragraphs_doc(text) if isinstance(text, str) else text,
        "updateAuthor": who,
        "created": stamp,
        "updated": stamp,
        "jsdPublic": True,
    }
    if visibility is not None:
        out["visibility"] = visibility
    return out


def _history(site: JiraSite, hid: int, when: datetime, who: dict[str, Any], field: str, old: Any, new: Any) -> dict:
    def ref(value: Any) -> tuple[str | None, str | None]:
        if value is None:
            return None, None
        if isinstance(value, dict):
            return str(value.get("id") or value.get("accountId")), str(value.get("name") or value.get("displayName"))
        return None, str(value)

    (fid, fname), (tid, tname) = ref(old), ref(new)
    return {
        "id": str(hid),
        "author": {k: who[k] for k in ("self", "accountId", "displayName", "active")},
        "created": _stamp(when),
        "items": [
            {
                "field": field,
                "fieldtype": "jira",
                **({"fieldId": field} if field != "assignee" else {"fieldId": "assignee"}),
                "from": fid,
                "fromString": fname,
                "to": tid,
                "toString": tname,
            }
        ],
    }


def _set_comments(issue: dict[str, Any], comments: list[dict[str, Any]]) -> None:
    issue["fields"]["comment"] = {
        "comments": comments,
        "self": f"{issue['self']}/comment",
        "maxResults": len(comments),
        "total": len(comments),
        "startAt": 0,
    }


def add_comments(site: JiraSite, key: str, texts: list[str], *, bump: bool = True) -> list[dict[str, Any]]:
    """Append comments to an issue (as its reporter) and, as Jira does, bump its ``updated``."""
    with site._lock:
        issue = site.issue(key)
        comments = list(issue["fields"].get("comment", {}).get("comments", []))
        start = max((int(c["id"]) % 1000 for c in comments), default=0) + 1
        when = stored_datetime(issue["fields"]["updated"])
        new = [
            comment_obj(site, issue, start + i, text, issue["fields"]["reporter"], when + timedelta(seconds=i))
            for i, text in enumerate(texts)
        ]
        _set_comments(issue, comments + new)
        if bump:
            site.touch_issue(key)
        return new


def edit_comment(site: JiraSite, key: str, comment_id: str, text: str) -> None:
    """Change a comment's body; its issue's ``updated`` moves, as in Jira."""
    with site._lock:
        issue = site.issue(key)
        for comment in issue["fields"]["comment"]["comments"]:
            if comment["id"] == comment_id:
                comment["body"] = paragraphs_doc(text)
                comment["updated"] = _stamp(SITE_NOW)
                break
        else:
            raise KeyError(comment_id)
        site.touch_issue(key)


def delete_comment(site: JiraSite, key: str, comment_id: str) -> None:
    with site._lock:
        issue = site.issue(key)
        comments = [c for c in issue["fields"]["comment"]["comments"] if c["id"] != comment_id]
        if len(comments) == len(issue["fields"]["comment"]["comments"]):
            raise KeyError(comment_id)
        _set_comments(issue, comments)
        site.touch_issue(key)


def _rich_block(site: JiraSite, rng: random.Random, issue: dict[str, Any]) -> list[dict[str, Any]]:
    """A runbook section in the ADF an editor makes: heading, panel, table, code, mention, card."""
    user = rng.choice(site.users) if site.users else {"accountId": "0", "displayName": "Sample User"}
    host = rng.choice(_HOSTS)

    def cell(kind: str, text: str) -> dict[str, Any]:
        return {"type": kind, "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}]}

    return [
        {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Runbook"}]},
        {
            "type": "panel",
            "attrs": {"panelType": "warning"},
            "content": [
                {
                    "type": "paragraph",
                    "content": [
                        {"type": "text", "text": "Page "},
                        {"type": "mention", "attrs": {"id": user["accountId"], "text": "@" + user["displayName"]}},
                        {"type": "text", "text": " before restarting " + host + "."},
                    ],
                }
            ],
        },
        {
            "type": "table",
            "attrs": {"isNumberColumnEnabled": False, "layout": "default"},
            "content": [
                {"type": "tableRow", "content": [cell("tableHeader", "Step"), cell("tableHeader", "Command")]},
                {"type": "tableRow", "content": [cell("tableCell", "Drain"), cell("tableCell", f"lb drain {host}")]},
                {
                    "type": "tableRow",
                    "content": [cell("tableCell", "Restart"), cell("tableCell", "systemctl restart app")],
                },
            ],
        },
        {
            "type": "codeBlock",
            "attrs": {"language": "bash"},
            "content": [{"type": "text", "text": f"curl -fsS https://{host}.internal/healthz\necho ok"}],
        },
        {
            "type": "paragraph",
            "content": [
                {"type": "text", "text": "Dashboard: "},
                {"type": "inlineCard", "attrs": {"url": f"{site.base_url}/browse/{issue['key']}"}},
            ],
        },
    ]


def _schema(kind: str, custom: str, cid: int, items: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    if items:
        out["items"] = items
    out |= {"custom": f"com.atlassian.jira.plugin.system.customfieldtypes:{custom}", "customId": cid}
    return out


def field_listing(cid: int, name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """One custom field as ``GET /rest/api/3/field`` lists it."""
    return {
        "id": f"customfield_{cid}",
        "key": f"customfield_{cid}",
        "name": name,
        "untranslatedName": name,
        "custom": True,
        "orderable": True,
        "navigable": True,
        "searchable": True,
        "clauseNames": [f"cf[{cid}]", name],
        "schema": schema,
    }


#: The site's custom fields as ``GET /rest/api/3/field`` lists them; two are both called "Team".
CUSTOM_FIELDS: tuple[dict[str, Any], ...] = tuple(
    field_listing(cid, name, schema)
    for cid, name, schema in (
        (
            10016,
            "Story Points",
            {"type": "number", "custom": "com.pyxis.greenhopper.jira:jsw-story-points", "customId": 10016},
        ),
        (10031, "Team", _schema("option", "select", 10031)),
        (10032, "Root cause", _schema("string", "textarea", 10032)),
        (
            10033,
            "Team",
            {
                "type": "team",
                "custom": "com.atlassian.jira.plugin.system.customfieldtypes:atlassian-team",
                "customId": 10033,
            },
        ),
        (10034, "Affected sites", _schema("array", "multiselect", 10034, "option")),
        (10035, "Area", _schema("option-with-child", "cascadingselect", 10035)),
        (10036, "Customer contact", _schema("user", "userpicker", 10036)),
        (10037, "Target date", _schema("date", "datepicker", 10037)),
        (10038, "Runbook URL", _schema("string", "url", 10038)),
    )
)
SYSTEM_FIELDS: tuple[dict[str, Any], ...] = tuple(
    {
        "id": fid,
        "key": fid,
        "name": name,
        "custom": False,
        "orderable": True,
        "navigable": True,
        "searchable": True,
        "clauseNames": [fid],
        "schema": {"type": kind, "system": fid},
    }
    for fid, name, kind in (
        ("summary", "Summary", "string"),
        ("status", "Status", "status"),
        ("assignee", "Assignee", "user"),
        ("labels", "Labels", "array"),
        ("updated", "Updated", "datetime"),
    )
)

# (root cause text, a query worded unlike it): only the "Root cause" custom field says these.
ROOT_CAUSES: tuple[tuple[str, str], ...] = (
    (
        "An expired intermediate TLS certificate on the payment gateway's load balancer.",
        "expired intermediate certificate",
    ),
    (
        "A Kafka consumer group rebalance loop caused by a too short session timeout.",
        "consumer group keeps rebalancing",
    ),
    (
        "The CDN cached an error page for six hours because of a missing no-store header.",
        "error page cached at the edge for hours",
    ),
)
_TEAMS = ("Falcon", "Otter", "Lynx")
_SITES = ("EU", "US", "APAC")
_AREAS = (("Payments", ("Cards", "Invoices")), ("Identity", ("SSO", "MFA")), ("Platform", ("Queues", "Storage")))


def _custom_values(site: JiraSite, rng: random.Random, issue: dict[str, Any], i: int, causes: dict[int, str]) -> None:
    fields = issue["fields"]
    if i in causes:
        fields["customfield_10032"] = paragraphs_doc(causes[i])
    if rng.random() >= 0.35:
        return
    fields["customfield_10016"] = rng.choice((1, 2, 3, 5, 8, 13, 2.5))
    team = rng.choice(_TEAMS)
    if rng.random() < 0.5:
        fields["customfield_10031"] = {
            "self": f"{site.base_url}/rest/api/3/customFieldOption/1{_TEAMS.index(team)}",
            "value": team,
            "id": f"1{_TEAMS.index(team)}",
        }
    else:
        fields["customfield_10033"] = {"id": f"team-{team.lower()}", "name": team, "title": team, "isShared": True}
    fields["customfield_10034"] = [
        {"self": f"{site.base_url}/rest/api/3/customFieldOption/2{n}", "value": s, "id": f"2{n}"}
        for n, s in enumerate(_SITES)
        if rng.random() < 0.5
    ]
    area, subs = rng.choice(_AREAS)
    fields["customfield_10035"] = {"value": area, "id": "30", "child": {"value": rng.choice(subs), "id": "31"}}
    if site.users and rng.random() < 0.5:
        user = rng.choice(site.users)
        fields["customfield_10036"] = {k: user[k] for k in ("self", "accountId", "displayName", "active")}
    if rng.random() < 0.4:
        fields["customfield_10037"] = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if rng.random() < 0.2:
        fields["customfield_10038"] = f"https://runbooks.example.com/{issue['key'].lower()}"


def _resolved_issue(issues: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next(
        (
            issue
            for issue in issues
            if issue["fields"]["status"]["statusCategory"]["key"] == "done" and issue["fields"].get("resolution")
        ),
        None,
    )


def lengthen_changelog(site: JiraSite, chosen: dict[str, Any] | None) -> None:
    """Give an issue a changelog longer than the search embeds: a run of early reassignments
    before its status path, so its late transitions arrive only by paging. Uses no randomness
    (the rest of the sample stays as it was); the issue's ``updated`` is not moved."""
    users = site.users
    if chosen is None or len(users) < 2:
        return
    created = stored_datetime(chosen["fields"]["created"])
    reporter = chosen["fields"]["reporter"]
    log = chosen["changelog"]
    histories = list(log["histories"])
    for n in range(LONG_CHANGELOG_CHURN):
        before, after = users[n % len(users)], users[(n + 1) % len(users)]
        when = created + timedelta(seconds=10 * (n + 1))
        histories.append(_history(site, 90000 + n, when, reporter, "assignee", before, after))
    histories.sort(key=lambda h: h["created"], reverse=True)  # Jira: newest first
    chosen["changelog"] = {**log, "maxResults": len(histories), "total": len(histories), "histories": histories}


def enrich(site: JiraSite, seed: int) -> None:
    """Give the generated issues comments, a changelog, links, attachments and a few rich sections."""
    rng = random.Random(f"documents:{seed}")
    users = site.users
    issues = site.issues
    if not issues or not users:
        return
    by_index = list(issues)
    fact_keys: dict[str, list[str]] = {}
    planted: dict[int, list[str]] = {}
    for n, (fact, _) in enumerate(COMMENT_FACTS):
        index = (n * 37 + 5) % len(by_index)
        planted.setdefault(index, []).append(fact)
        fact_keys.setdefault(fact, []).append(by_index[index]["key"])
    causes: dict[int, str] = {}
    for n, (cause, _) in enumerate(ROOT_CAUSES):
        index = (n * 53 + 17) % len(by_index)
        causes[index] = cause
        site.custom_facts.setdefault(cause, []).append(by_index[index]["key"])
    long_index = 11 % len(by_index) if len(by_index) >= 100 else None
    restricted_index = 3 % len(by_index)
    deleted_author_index = 7 % len(by_index)
    hid = 50000
    for i, issue in enumerate(issues):
        fields = issue["fields"]
        created = stored_datetime(fields["created"])
        updated = stored_datetime(fields["updated"])
        span = max((updated - created).total_seconds(), 60.0)
        count = 0 if rng.random() < 0.55 else rng.randint(1, 3)
        if i == long_index:
            count = LONG_THREAD
        texts: list[str] = []
        for _ in range(count):
            texts.append(rng.choice(_FILLER).format(host=rng.choice(_HOSTS), version=rng.choice(_VERSIONS)))
        texts += planted.get(i, [])
        comments = []
        for n, text in enumerate(texts, start=1):
            when = created + timedelta(seconds=span * (n / (len(texts) + 1)))
            author = None if (i == deleted_author_index and n == 1) else rng.choice(users)
            comments.append(comment_obj(site, issue, n, text, author, when))
        if i == restricted_index:
            comments.append(
                comment_obj(
                    site,
                    issue,
                    len(comments) + 1,
                    RESTRICTED_FACT,
                    users[0],
                    created + timedelta(seconds=span / 2),
                    visibility={"type": "role", "value": "Developers", "identifier": "Developers"},
                )
            )
        _set_comments(issue, comments)

        # History: the status path to the current status, an assignment, the resolution.
        histories = []
        reporter = fields["reporter"]
        category = fields["status"]["statusCategory"]["key"]
        if fields.get("assignee"):
            hid += 1
            histories.append(
                _history(site, hid, created + timedelta(minutes=5), reporter, "assignee", None, fields["assignee"])
            )
        if category != "new":
            changed = stored_datetime(fields.get("statuscategorychangedate") or fields["updated"])
            start = created + (changed - created) / 3
            hid += 1
            histories.append(
                _history(
                    site,
                    hid,
                    start,
                    reporter,
                    "status",
                    {"id": "1", "name": "To Do"},
                    {"id": "3", "name": "In Progress"},
                )
            )
            if category == "done":
                reopened = rng.random() < 0.08
                if reopened:
                    hid += 1
                    first = start + (changed - start) / 3
                    histories.append(
                        _history(
                            site,
                            hid,
                            first,
                            reporter,
                            "status",
                            {"id": "3", "name": "In Progress"},
                            {"id": "10001", "name": "Done"},
                        )
                    )
                    hid += 1
                    histories.append(
                        _history(
                            site,
                            hid,
                            first + (changed - first) / 2,
                            reporter,
                            "status",
                            {"id": "10001", "name": "Done"},
                            {"id": "3", "name": "In Progress"},
                        )
                    )
                hid += 1
                histories.append(
                    _history(
                        site, hid, changed, reporter, "status", {"id": "3", "name": "In Progress"}, fields["status"]
                    )
                )
                if fields.get("resolution"):
                    hid += 1
                    histories.append(_history(site, hid, changed, reporter, "resolution", None, fields["resolution"]))
            elif fields["status"]["name"] != "In Progress":
                hid += 1
                histories.append(
                    _history(
                        site, hid, changed, reporter, "status", {"id": "3", "name": "In Progress"}, fields["status"]
                    )
                )
        histories.sort(key=lambda h: h["created"], reverse=True)  # Jira: newest first
        issue["changelog"] = {
            "startAt": 0,
            "maxResults": len(histories),
            "total": len(histories),
            "histories": histories,
        }

        fields["issuelinks"] = []
        files = []
        if rng.random() < 0.1:
            for n, (name, mime) in enumerate(rng.sample(_FILES, rng.randint(1, 2))):
                aid = str(int(issue["id"]) * 10 + n)
                files.append(
                    {
                        "self": f"{site.base_url}/rest/api/3/attachment/{aid}",
                        "id": aid,
                        "filename": name,
                        "author": {k: reporter[k] for k in ("self", "accountId", "displayName", "active")},
                        "created": fields["created"],
                        "size": rng.randint(200, 90000),
                        "mimeType": mime,
                        "content": f"{site.base_url}/rest/api/3/attachment/content/{aid}",
                    }
                )
        fields["attachment"] = files
        _custom_values(site, rng, issue, i, causes)
        if i % 50 == 9 and isinstance(fields.get("description"), dict):
            fields["description"]["content"] = list(fields["description"]["content"]) + _rich_block(site, rng, issue)

    if len(by_index) >= 100:
        lengthen_changelog(site, _resolved_issue(by_index[13:] + by_index[:13]))

    # Issue links, both ends, between issues of the same project.
    link_id = 20000
    by_project: dict[Any, list[dict[str, Any]]] = {}  # in the issues' order, as a scan of them finds them
    for issue in issues:
        by_project.setdefault(issue["fields"]["project"]["id"], []).append(issue)
    for issue in issues:
        if rng.random() >= 0.07:
            continue
        project = issue["fields"]["project"]["id"]
        others = [o for o in by_project[project] if o is not issue]
        if not others:
            continue
        other = rng.choice(others)
        tid, name, inward, outward = rng.choice(_LINK_TYPES)
        link_id += 1
        kind = {
            "id": tid,
            "name": name,
            "inward": inward,
            "outward": outward,
            "self": f"{site.base_url}/rest/api/3/issueLinkType/{tid}",
        }

        def end(target: dict[str, Any]) -> dict[str, Any]:
            f = target["fields"]
            return {
                "id": target["id"],
                "key": target["key"],
                "self": target["self"],
                "fields": {k: f[k] for k in ("summary", "status", "priority", "issuetype")},
            }

        self_url = f"{site.base_url}/rest/api/3/issueLink/{link_id}"
        issue["fields"]["issuelinks"].append(
            {"id": str(link_id), "self": self_url, "type": kind, "outwardIssue": end(other)}
        )
        other["fields"]["issuelinks"].append(
            {"id": str(link_id), "self": self_url, "type": kind, "inwardIssue": end(issue)}
        )
    site.comment_facts = dict(fact_keys)


def document_queries(site: JiraSite) -> list[tuple[str, list[str]]]:
    """Comment-only queries with the issues whose comments answer them (omitted when gone)."""
    live = {i["key"] for i in site.issues}
    out = []
    for fact, query in COMMENT_FACTS:
        keys = [k for k in site.comment_facts.get(fact, []) if k in live]
        if keys:
            out.append((query, keys))
    return out


def custom_field_queries(site: JiraSite) -> list[tuple[str, list[str]]]:
    """Queries only the "Root cause" custom field answers (a tenant must list it in custom_fields)."""
    live = {i["key"] for i in site.issues}
    out = []
    for cause, query in ROOT_CAUSES:
        keys = [k for k in site.custom_facts.get(cause, []) if k in live]
        if keys:
            out.append((query, keys))
    return out


def history_queries(site: JiraSite) -> list[tuple[str, list[str]]]:
    """Queries only the history answers: issues that were reopened after being done."""
    reopened = []
    for issue in site.issues:
        histories = (issue.get("changelog") or {}).get("histories") or []
        for h in histories:
            item = h["items"][0]
            if item["field"] == "status" and item.get("fromString") == "Done" and item.get("toString") != "Done":
                reopened.append(issue["key"])
                break
    return [("issues that were reopened after being marked done", reopened)] if reopened else []


def issues_with_field_names(site: JiraSite) -> list[dict[str, Any]]:
    """The site's issues as a search with ``expand=names,schema`` for every custom field returns
    them (the names and schemas attached per issue, as the issues spec's records do)."""
    known = {f["id"]: f for f in CUSTOM_FIELDS}
    out = []
    for issue in site.issues:
        ids = [k for k in issue["fields"] if k in known]
        out.append(
            {**issue, "names": {k: known[k]["name"] for k in ids}, "schema": {k: known[k]["schema"] for k in ids}}
        )
    return out
