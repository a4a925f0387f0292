"""The deterministic sample site generator and the retrieval labels of its issues.

:func:`generate_sample_site` builds a :class:`JiraSite` from a seed: 36 projects of
every kind Jira Cloud has (company- and team-managed; software, business and service
desk; with and without category, lead URL or description), their issue types and
statuses, and issues written from the topics of :mod:`.corpus` in English, German,
French, Spanish and Japanese, with ADF descriptions of every node type the sync must
read (mentions, emoji, tables, code blocks, panels, dates, status lozenges) and a few
very long ones. The same arguments always give an equal site: all randomness comes from
one ``random.Random(seed)``, drawn in a fixed order.

:func:`labelled_queries` pairs natural-language queries with the keys of the issues on
their topic, for retrieval-quality tests; the topic of an issue is kept in
``JiraSite.topics`` only, never in its fields.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from etl_assets.core.sources.jira.sample import corpus, documents
from etl_assets.core.sources.jira.sample.adf_nodes import code_block, doc, heading, list_block, paragraph, text_node
from etl_assets.core.sources.jira.sample.corpus import Topic
from etl_assets.core.sources.jira.sample.site import (
    PRIORITIES,
    SITE_NOW,
    JiraSite,
    avatar_urls,
    base_fields,
    format_jira_timestamp,
    key_sort,
    lead_ref,
    status_category,
    user_obj,
)

__all__ = ["default_labelled_queries", "generate_sample_site", "labelled_queries"]

_CREATED_FROM = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
_CREATED_TO = datetime(2026, 2, 27, 18, 0, tzinfo=UTC)

# --------------------------------------------------------------------------------------
# Site furniture: users, projects, categories, issue types, statuses
# --------------------------------------------------------------------------------------

# (display name, time zone, active)
_USERS: tuple[tuple[str, str, bool], ...] = (
    ("Anna Schmidt", "Europe/Berlin", True),
    ("Jürgen Weiß", "Europe/Berlin", True),
    ("Zoë Martin", "Europe/Paris", True),
    ("François Dubois", "Europe/Paris", True),
    ("José Álvarez", "Europe/Madrid", True),
    ("María Fernández", "America/Mexico_City", True),
    ("山田 太郎", "Asia/Tokyo", True),
    ("佐藤 花子", "Asia/Tokyo", True),
    ("Анна Иванова", "Europe/Berlin", True),
    ("Priya Natarajan", "Asia/Kolkata", True),
    ("Liam O'Connor", "Europe/Dublin", True),
    ("Chloé Nguyễn", "America/Toronto", True),
    ("Sam Taylor", "America/New_York", True),
    ("Olivia Chen", "America/Los_Angeles", True),
    ("Björn Lindqvist", "Europe/Stockholm", False),
)

# (id, name, description)
_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("10000", "Engineering", "Product development teams"),
    ("10001", "Operations", "Infrastructure, reliability and internal tooling"),
    ("10002", "Kundenservice", "Support-Teams für Kunden in allen Regionen"),
    ("10003", "Go-to-market", ""),
    ("10004", "Finance & Legal", "Billing, contracts and compliance"),
)


@dataclass(frozen=True)
class _ProjectSpec:
    key: str
    name: str
    type_key: str  # software | business | service_desk
    team_managed: bool
    lang: str  # preferred language of its issues
    category: int | None  # index into _CATEGORIES
    description: str
    url: str | None = None
    weight: float = 1.0  # relative share of issues


_PROJECTS: tuple[_ProjectSpec, ...] = (
    _ProjectSpec(
        "PAY",
        "Payments Platform",
        "software",
        False,
        "en",
        0,
        "Card payments, payouts and payment provider integrations.",
        "https://wiki.example.com/payments",
        1.6,
    ),
    _ProjectSpec(
        "ZV",
        "Zahlungsverkehr – Übersicht",
        "business",
        False,
        "de",
        4,
        "Überblick über alle Zahlungsströme und Abstimmungen.",
    ),
    _ProjectSpec("JPSUP", "日本語サポート", "service_desk", False, "ja", 2, "日本のお客様向けサポート窓口"),
    _ProjectSpec(
        "CAFE", "Café Opérations", "business", True, "fr", None, "Opérations quotidiennes des cafés partenaires."
    ),
    _ProjectSpec("LAUNCH", "🚀 Launch Squad", "software", True, "en", 3, ""),
    _ProjectSpec("PODD", "Поддержка", "service_desk", False, "en", 2, "Служба поддержки клиентов"),
    _ProjectSpec("MOB", "Mobile Apps", "software", False, "en", 0, "iOS and Android clients.", None, 1.5),
    _ProjectSpec(
        "WEB",
        "Web Frontend",
        "software",
        False,
        "en",
        0,
        "Single-page application and design system adoption.",
        None,
        1.5,
    ),
    _ProjectSpec(
        "IAM",
        "Identity & Access",
        "software",
        False,
        "en",
        0,
        "Login, SSO, MFA and sessions.",
        "https://wiki.example.com/iam",
        1.3,
    ),
    _ProjectSpec("SRCH", "Search Relevance", "software", True, "en", 0, "Indexing and ranking."),
    _ProjectSpec("DWH", "Data Warehouse", "software", False, "en", 1, ""),
    _ProjectSpec("BILL", "Billing & Invoicing", "software", False, "en", 4, "Invoices, credit notes and tax."),
    _ProjectSpec("NOTIF", "Notifications Service", "software", False, "en", 0, "Email, push and in-app notifications."),
    _ProjectSpec("REP", "Reporting & Exports", "software", False, "en", 0, "Reports, dashboards and data exports."),
    _ProjectSpec("DS", "Design System", "software", True, "en", 0, "Shared UI components, tokens and themes."),
    _ProjectSpec(
        "INFRA",
        "Infrastructure",
        "software",
        False,
        "en",
        1,
        "Kubernetes clusters, networking and databases.",
        None,
        1.4,
    ),
    _ProjectSpec(
        "SRE",
        "Site Reliability",
        "software",
        False,
        "en",
        1,
        "Incident response and on-call.",
        "https://status.example.com",
    ),
    _ProjectSpec("CS", "Customer Success", "business", False, "en", 3, "Escalations from key accounts."),
    _ProjectSpec("MKT", "Marketing Website", "business", True, "en", 3, "", None, 0.5),
    _ProjectSpec("L10N", "Localization", "software", False, "en", 0, "Translations for all supported languages."),
    _ProjectSpec("SEC", "Security Review", "software", False, "en", 1, "Security findings and audits."),
    _ProjectSpec("PARTNER", "Partner Integrations", "software", False, "en", 0, "Public API and partner connectors."),
    _ProjectSpec(
        "ONB", "Onboarding Flow", "software", True, "en", None, "Sign-up, invitations and first-run experience."
    ),
    _ProjectSpec("ANLY", "Analytics Pipeline", "software", False, "en", 1, ""),
    _ProjectSpec("DX", "Developer Experience", "software", True, "en", None, "Build tooling and CI.", None, 0.6),
    _ProjectSpec(
        "SOPES",
        "Soporte Técnico España",
        "service_desk",
        False,
        "es",
        2,
        "Atención al cliente para España y Latinoamérica.",
    ),
    _ProjectSpec("QS", "Qualitätssicherung", "software", False, "de", 0, "Testautomatisierung und Abnahme."),
    _ProjectSpec("EPM", "Équipe Produit Montréal", "software", True, "fr", 0, "Équipe produit basée à Montréal."),
    _ProjectSpec("TOOLS", "Internal Tools ", "software", False, "en", 1, "", None, 0.5),
    _ProjectSpec(
        "LEGAL",
        "Legal & Compliance",
        "business",
        False,
        "en",
        4,
        "Contracts, GDPR requests and policy reviews.",
        None,
        0.6,
    ),
    _ProjectSpec("GDPR", "Data Privacy (GDPR)", "business", True, "en", 4, "Data subject requests."),
    _ProjectSpec("CHK", "Checkout Experience", "software", False, "en", 0, "Cart, coupons and checkout."),
    _ProjectSpec("APIGW", "API Gateway", "software", False, "en", 1, "Rate limiting and routing."),
    _ProjectSpec(
        "A11Y", "Accessibility Guild", "software", True, "en", None, "Accessibility audits and fixes.", None, 0.6
    ),
    _ProjectSpec("RELMGMT", "Release Management", "software", False, "en", 1, "", None, 0.0),
    _ProjectSpec("KB", "Knowledge Base", "service_desk", False, "en", None, "", None, 0.0),
)

# Global (company-managed) issue types: (id, name, description, avatarId, level)
_GLOBAL_TYPES: tuple[tuple[str, str, str, int, int], ...] = (
    (
        "10000",
        "Epic",
        "A big user story that needs to be broken down. Created by Jira Software - do not edit or delete.",
        10307,
        1,
    ),
    ("10001", "Story", "Functionality or a feature expressed as a user goal.", 10315, 0),
    ("10002", "Task", "A small, distinct piece of work.", 10318, 0),
    ("10003", "Bug", "A problem or error.", 10303, 0),
    ("10004", "Sub-task", "A small piece of work that's part of a larger task.", 10316, -1),
    (
        "10005",
        "[System] Service request",
        "Created by Jira Service Management configuration for the service request issue type.",
        10320,
        0,
    ),
    ("10006", "[System] Incident", "For system outages or incidents. Created by Jira Service Management.", 10322, 0),
)

_RESOLUTIONS: dict[str, tuple[str, str]] = {
    "done": ("10000", "Work has been completed on this issue."),
    "won't do": ("10001", "This issue won't be actioned."),
    "duplicate": ("10002", "The problem is a duplicate of an existing issue."),
    "cannot reproduce": ("10003", "All attempts at reproducing this issue failed."),
}
_RESOLUTION_NAMES = {
    "done": "Done",
    "won't do": "Won't Do",
    "duplicate": "Duplicate",
    "cannot reproduce": "Cannot Reproduce",
}

# Global statuses: (id, name, category key, description, icon file or "")
_GLOBAL_STATUSES: tuple[tuple[str, str, str, str, str], ...] = (
    ("10000", "To Do", "new", "", ""),
    ("10002", "Backlog", "new", "Work that is not planned yet.", ""),
    ("10003", "Selected for Development", "new", "", ""),
    (
        "3",
        "In Progress",
        "indeterminate",
        "This issue is being actively worked on at the moment by the assignee.",
        "inprogress.png",
    ),
    ("10004", "In Review", "indeterminate", "Waiting for code review.", ""),
    ("10005", "Blocked", "indeterminate", "Work cannot continue for now.", ""),
    ("10009", "Waiting for Customer", "indeterminate", "Waiting for a reply from the customer.", ""),
    ("10001", "Done", "done", "", ""),
    ("10006", "Won't Do", "done", "The issue will not be worked on.", ""),
    ("10007", "Erledigt", "done", "Die Arbeit ist abgeschlossen.", ""),
    ("10008", "完了", "done", "作業が完了しました。", ""),
)

# Workflows for company-managed projects: status names with a relative weight.
_CLASSIC_WORKFLOWS: dict[str, tuple[tuple[str, float], ...]] = {
    "software": (
        ("To Do", 3),
        ("Backlog", 2),
        ("Selected for Development", 1),
        ("In Progress", 3),
        ("In Review", 1.5),
        ("Blocked", 0.7),
        ("Done", 5),
        ("Won't Do", 0.8),
    ),
    "business": (("To Do", 3), ("In Progress", 3), ("Done", 5)),
    "service_desk": (
        ("To Do", 3),
        ("In Progress", 2),
        ("Waiting for Customer", 1.5),
        ("Done", 5),
        ("Won't Do", 0.7),
    ),
}

_TEAM_STATUS_NAMES = {
    "en": (("To Do", "new"), ("In Progress", "indeterminate"), ("Done", "done")),
    "fr": (("À faire", "new"), ("En cours", "indeterminate"), ("Terminé", "done")),
}

_CUSTOMERS = (
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Logistics",
    "Müller & Söhne GmbH",
    "Société des Cafés Lyonnais",
    "Hanabi K.K.",
    "Nordwind AB",
    "Soylent Foods",
)
_VERSIONS = ("4.18", "4.19", "5.0", "5.1", "5.2", "2026.1", "2026.2")

_EMOJI = (
    (":warning:", "26a0", "⚠️"),
    (":fire:", "1f525", "🔥"),
    (":bug:", "1f41b", "🐛"),
    (":eyes:", "1f440", "👀"),
    (":tada:", "1f389", "🎉"),
)

_LONG_SECTIONS_EN = (
    "Timeline",
    "Impact",
    "Investigation notes",
    "Application log excerpt",
    "Stack trace",
    "Root cause analysis",
    "Follow-up actions",
)
_STACK_FRAMES = (
    'File "/srv/app/service/handlers.py", line {n}, in handle_request',
    'File "/srv/app/service/pipeline.py", line {n}, in run_step',
    'File "/srv/app/lib/retry.py", line {n}, in call_with_retry',
    "at com.example.core.Dispatcher.dispatch(Dispatcher.java:{n})",
    "at com.example.core.worker.JobRunner.execute(JobRunner.java:{n})",
    "at java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:{n})",
)
_HOSTS = ("app-eu-1", "app-eu-2", "app-us-1", "worker-3", "worker-7", "edge-fra-2")


# --------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------


class _Gen:
    """One generation run; all randomness comes from ``self.rng``."""

    def __init__(self, seed: int, base_url: str, id_offset: int) -> None:
        self.rng = random.Random(seed)
        self.base = base_url.rstrip("/")
        self.id_offset = id_offset
        self.phrases = corpus.phrases()

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # ---- furniture -----------------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        return [user_obj(self.base, n, name, tz, active) for n, (name, tz, active) in enumerate(_USERS)]

    def global_issue_types(self) -> list[dict[str, Any]]:
        out = []
        for tid, name, desc, avatar, level in _GLOBAL_TYPES:
            obj: dict[str, Any] = {
                "self": f"{self.base}/rest/api/3/issuetype/{tid}",
                "id": tid,
                "description": desc,
                "iconUrl": (f"{self.base}/rest/api/2/universal_avatar/view/type/issuetype/avatar/{avatar}?size=medium"),
                "name": name,
                "subtask": level == -1,
                "avatarId": avatar,
                "hierarchyLevel": level,
            }
            if not name.startswith("["):
                obj["untranslatedName"] = name
            out.append(obj)
        return out

    def global_statuses(self) -> list[dict[str, Any]]:
        out = []
        for sid, name, cat, desc, icon in _GLOBAL_STATUSES:
            obj: dict[str, Any] = {
                "self": f"{self.base}/rest/api/3/status/{sid}",
                "description": desc,
                "iconUrl": (f"{self.base}/images/icons/statuses/{icon}" if icon else f"{self.base}/"),
                "name": name,
                "untranslatedName": name,
                "id": sid,
                "statusCategory": status_category(self.base, cat),
            }
            if sid in ("10005", "10009"):  # untranslatedName only on some, as on Cloud
                del obj["untranslatedName"]
            out.append(obj)
        return out

    def project(
        self,
        index: int,
        spec: _ProjectSpec,
        lead: dict[str, Any],
        issue_types: list[dict[str, Any]],
    ) -> dict[str, Any]:
        pid = str(10000 + self.id_offset + index)
        obj: dict[str, Any] = {
            "expand": "description,lead,issueTypes,url,projectKeys,permissions,insight",
            "self": f"{self.base}/rest/api/3/project/{pid}",
            "id": pid,
            "key": spec.key,
            "description": spec.description,
            "lead": lead_ref(lead),
            "issueTypes": issue_types,
            "name": spec.name,
            "avatarUrls": avatar_urls(self.base, "project", 10400 + index),
            "projectTypeKey": spec.type_key,
            "simplified": spec.team_managed,
            "style": "next-gen" if spec.team_managed else "classic",
            "isPrivate": False,
            "properties": {},
        }
        if spec.url:
            obj["url"] = spec.url
        if spec.category is not None:
            cid, cname, cdesc = _CATEGORIES[spec.category]
            obj["projectCategory"] = {
                "self": f"{self.base}/rest/api/3/projectCategory/{cid}",
                "id": cid,
                "name": cname,
                "description": cdesc,
            }
        return obj

    def team_types(self, pid: str, spec: _ProjectSpec, next_id: int) -> list[dict]:
        names: list[tuple[str, str, int, int]] = [
            ("Epic", "Epics track collections of related bugs, stories, and tasks.", 10307, 1),
            ("Tâche" if spec.lang == "fr" else "Task", "Tasks track small, distinct pieces of work.", 10318, 0),
            ("Bug", "Bugs track problems or errors.", 10303, 0),
        ]
        if spec.type_key == "software":
            names.append(("Story", "Stories track functionality or features expressed as user goals.", 10315, 0))
        names.append(("Subtask", "Subtasks track small pieces of work that are part of a larger task.", 10316, -1))
        out = []
        for offset, (name, desc, avatar, level) in enumerate(names):
            tid = str(next_id + offset)
            out.append(
                {
                    "self": f"{self.base}/rest/api/3/issuetype/{tid}",
                    "id": tid,
                    "description": desc,
                    "iconUrl": (
                        f"{self.base}/rest/api/2/universal_avatar/view/type/issuetype/avatar/{avatar}?size=medium"
                    ),
                    "name": name,
                    "subtask": level == -1,
                    "avatarId": avatar,
                    "entityId": self.uuid(),
                    "hierarchyLevel": level,
                    "scope": {"type": "PROJECT", "project": {"id": pid}},
                }
            )
        return out

    def team_statuses(self, pid: str, spec: _ProjectSpec, next_id: int) -> list[dict[str, Any]]:
        names = list(_TEAM_STATUS_NAMES["fr" if spec.lang == "fr" else "en"])
        if spec.type_key == "software":
            names.insert(2, ("In Review", "indeterminate"))
        out = []
        for offset, (name, cat) in enumerate(names):
            sid = str(next_id + offset)
            out.append(
                {
                    "self": f"{self.base}/rest/api/3/status/{sid}",
                    "description": "",
                    "iconUrl": f"{self.base}/",
                    "name": name,
                    "id": sid,
                    "statusCategory": status_category(self.base, cat),
                    "scope": {"type": "PROJECT", "project": {"id": pid}},
                }
            )
        return out

    # ---- text ----------------------------------------------------------------------

    def fill(self, template: str) -> str:
        return template.format(
            customer=self.rng.choice(_CUSTOMERS),
            version=self.rng.choice(_VERSIONS),
            pct=self.rng.choice((2, 5, 8, 12, 20, 35)),
            host=self.rng.choice(_HOSTS),
            time=f"{self.rng.randint(0, 23):02d}:{self.rng.randint(0, 59):02d}",
        )

    def log_lines(self, topic: Topic, count: int, day: datetime) -> list[str]:
        pool = list(topic.logs) or [
            "INFO  app.Request - GET /api/v2/items 200 {n}ms",
        ]
        generic = (
            "INFO  app.Request - {method} /api/v2/{res} {status} {ms}ms req={req}",
            "DEBUG app.Cache - miss key={res}:{n} ttl=300",
            "INFO  app.Worker - job {n} finished in {ms}ms queue=default",
        )
        lines = []
        stamp = day.replace(hour=self.rng.randint(0, 22), minute=0, second=0)
        for i in range(count):
            stamp += timedelta(milliseconds=self.rng.randint(20, 9000))
            if i % 3 == 0 or self.rng.random() < 0.3:
                body = self.rng.choice(pool)
            else:
                body = self.rng.choice(generic)
            body = (
                body.replace("{n}", str(self.rng.randint(1000, 99999)))
                .replace("{method}", self.rng.choice(("GET", "POST", "PUT")))
                .replace("{res}", self.rng.choice(("orders", "users", "reports")))
                .replace("{status}", self.rng.choice(("200", "200", "201", "500")))
                .replace("{ms}", str(self.rng.randint(3, 4000)))
                .replace("{req}", self.uuid()[:8])
            )
            lines.append(f"{stamp:%Y-%m-%d %H:%M:%S},{stamp.microsecond // 1000:03d} {body}")
        return lines

    def description(
        self,
        topic: Topic,
        lang: str,
        users: list[dict[str, Any]],
        created: datetime,
        related_urls: list[str],
    ) -> dict[str, Any]:
        rng = self.rng
        sentences = list(topic.texts.get(lang, topic.texts["en"]).sentences)
        rng.shuffle(sentences)
        generic = self.phrases.generic[lang]
        heads = self.phrases.headings[lang]
        content: list[dict[str, Any]] = []

        first: list[dict[str, Any]] = []
        if rng.random() < 0.15:
            user = rng.choice(users)
            first += [
                {
                    "type": "mention",
                    "attrs": {
                        "id": user["accountId"],
                        "text": "@" + user["displayName"],
                        "accessLevel": "",
                    },
                },
                text_node(" "),
            ]
        take = rng.randint(1, 2)
        first.append(text_node(" ".join(sentences[:take])))
        if rng.random() < 0.1:
            short, code, char = rng.choice(_EMOJI)
            first += [
                text_node(" "),
                {"type": "emoji", "attrs": {"shortName": short, "id": code, "text": char}},
            ]
        content.append(paragraph(*first))
        rest = sentences[take:]

        second = " ".join(rest[: rng.randint(1, 2)])
        if rng.random() < 0.6:
            second = (second + " " + self.fill(rng.choice(generic))).strip()
        inline: list[dict[str, Any]] = [text_node(second)] if second else []
        roll = rng.random()
        if roll < 0.1 and related_urls:
            inline += [text_node(" "), {"type": "inlineCard", "attrs": {"url": rng.choice(related_urls)}}]
        elif roll < 0.2:
            inline += [
                text_node(" "),
                text_node("Runbook", [{"type": "link", "attrs": {"href": "https://wiki.example.com/runbooks"}}]),
            ]
        if inline:
            content.append(paragraph(*inline))

        if lang == "en" and rng.random() < 0.15:
            content.append(heading(3, "Steps to reproduce"))
            content.append(list_block("orderedList", rng.sample(self.phrases.steps_to_reproduce, rng.randint(2, 4))))
        if len(rest) > 2 and rng.random() < 0.3:
            content.append(heading(2, heads.details))
            content.append(list_block("bulletList", rest[2:]))
        if topic.logs and rng.random() < 0.3:
            content.append(heading(3, heads.log))
            lines = self.log_lines(topic, rng.randint(2, 6), created)
            content.append(code_block("text", "\n".join(lines)))
        if rng.random() < 0.08:
            content.append(heading(3, heads.environment))
            content.append(self.table())
        roll = rng.random()
        if roll < 0.05:
            due = created + timedelta(days=rng.randint(7, 40))
            day = due.replace(hour=0, minute=0, second=0, microsecond=0)
            content.append(
                paragraph(
                    text_node("Target date: " if lang == "en" else "→ "),
                    {"type": "date", "attrs": {"timestamp": str(int(day.timestamp() * 1000))}},
                )
            )
        elif roll < 0.1:
            text, color = rng.choice((("BLOCKED", "red"), ("IN QA", "blue"), ("NEEDS INFO", "yellow")))
            content.append(
                paragraph(
                    text_node("State: " if lang == "en" else "→ "),
                    {"type": "status", "attrs": {"text": text, "color": color, "localId": self.uuid(), "style": ""}},
                )
            )
        elif roll < 0.14:
            content.append(
                {
                    "type": "panel",
                    "attrs": {"panelType": "info"},
                    "content": [paragraph(text_node(self.fill(rng.choice(generic))))],
                }
            )
        return doc(content)

    def table(self) -> dict[str, Any]:
        rng = self.rng
        rows = [
            ("Component", "Value"),
            ("Browser", rng.choice(("Chrome 131", "Firefox 134", "Safari 18.2", "Edge 131"))),
            ("OS", rng.choice(("macOS 15.2", "Windows 11", "Ubuntu 24.04", "iOS 18.1", "Android 14"))),
            ("App version", rng.choice(_VERSIONS)),
        ]

        def cell(kind: str, value: str) -> dict[str, Any]:
            return {"type": kind, "attrs": {}, "content": [paragraph(text_node(value))]}

        return {
            "type": "table",
            "attrs": {"isNumberColumnEnabled": False, "layout": "default", "localId": self.uuid()},
            "content": [
                {
                    "type": "tableRow",
                    "content": [cell("tableHeader" if r == 0 else "tableCell", v) for v in row],
                }
                for r, row in enumerate(rows)
            ],
        }

    def long_description(self, topic: Topic, users: list[dict[str, Any]], created: datetime) -> dict[str, Any]:
        rng = self.rng
        target = rng.randint(3200, 4900)
        words = 0
        sentences = topic.texts["en"].sentences
        content: list[dict[str, Any]] = []

        def add(node: dict[str, Any], text: str) -> None:
            nonlocal words
            content.append(node)
            words += len(text.split())

        intro = " ".join(sentences[:3])
        add(paragraph(text_node(intro)), intro)
        section = 0
        while words < target:
            name = _LONG_SECTIONS_EN[section % len(_LONG_SECTIONS_EN)]
            round_no = section // len(_LONG_SECTIONS_EN) + 1
            title = name if round_no == 1 else f"{name} ({round_no})"
            add(heading(2, title), title)
            if name in ("Impact", "Investigation notes", "Root cause analysis"):
                for _ in range(rng.randint(2, 4)):
                    parts = [rng.choice(sentences)]
                    parts += [self.fill(rng.choice(self.phrases.investigation)) for _ in range(3)]
                    parts.append(rng.choice(sentences))
                    text = " ".join(parts)
                    add(paragraph(text_node(text)), text)
            elif name == "Timeline":
                stamp = created
                items = []
                for _ in range(rng.randint(5, 9)):
                    stamp += timedelta(minutes=rng.randint(3, 90))
                    items.append(f"{stamp:%Y-%m-%d %H:%M} UTC – {self.fill(rng.choice(self.phrases.investigation))}")
                add(list_block("bulletList", items), " ".join(items))
            elif name == "Application log excerpt":
                lines = self.log_lines(topic, rng.randint(50, 90), created)
                text = "\n".join(lines)
                add(code_block("text", text), text)
            elif name == "Stack trace":
                frames = ["Traceback (most recent call last):"]
                for _ in range(rng.randint(15, 30)):
                    frame = rng.choice(_STACK_FRAMES).replace("{n}", str(rng.randint(10, 2400)))
                    frames.append("  " + frame)
                frames.append(rng.choice(topic.logs) if topic.logs else "RuntimeError: unexpected state")
                text = "\n".join(frames)
                add(code_block("java" if "at " in text else "python", text), text)
            else:  # follow-up actions
                items = [self.fill(rng.choice(self.phrases.investigation)) for _ in range(4)]
                items.append(rng.choice(sentences))
                add(list_block("orderedList", items), " ".join(items))
            section += 1
        user = rng.choice(users)
        content.append(
            paragraph(
                {
                    "type": "mention",
                    "attrs": {"id": user["accountId"], "text": "@" + user["displayName"], "accessLevel": ""},
                },
                text_node(" please review the follow-up actions."),
            )
        )
        return doc(content)


@dataclass
class _Draft:
    topic: Topic
    lang: str
    spec_index: int
    created: datetime
    updated: datetime


def generate_sample_site(
    *,
    seed: int = 7,
    n_projects: int = 36,
    n_issues: int = 300,
    base_url: str = "https://sample.atlassian.net",
    id_offset: int = 0,
) -> JiraSite:
    """Build a deterministic sample site (same arguments -> equal site).

    ``id_offset`` shifts project and issue ids (projects ``10000 + id_offset + i``,
    issues ``10000 + id_offset + i``) so that two sites can have disjoint ids.
    """
    if n_projects < 0 or n_issues < 0:
        raise ValueError("n_projects and n_issues must be >= 0")
    if n_issues and not n_projects:
        raise ValueError("issues need at least one project")
    gen = _Gen(seed, base_url, id_offset)
    rng = gen.rng
    base = gen.base
    users = gen.users()

    specs = list(_PROJECTS[:n_projects])
    for extra in range(len(specs), n_projects):
        specs.append(
            _ProjectSpec(
                f"SBX{extra + 1}",
                f"Sandbox {extra + 1}",
                "software",
                False,
                "en",
                None if extra % 4 == 0 else 0,
                "Sandbox project for experiments.",
            )
        )

    issue_types = gen.global_issue_types()
    statuses = gen.global_statuses()
    types_by_name = {t["name"]: t for t in issue_types}
    projects: list[dict[str, Any]] = []
    project_types: list[list[dict[str, Any]]] = []
    project_statuses: list[list[tuple[dict[str, Any], float]]] = []
    components: dict[str, list[dict[str, Any]]] = {}
    status_by_name = {s["name"]: s for s in statuses}
    next_type_id, next_status_id, next_component = 10100, 10100, 10000
    component_pool = (
        "API",
        "Backend",
        "Frontend",
        "Mobile",
        "Database",
        "Billing",
        "Auth",
        "Search",
        "Infrastructure",
        "Docs",
        "Benachrichtigungen",
        "Facturation",
        "決済",
    )
    for index, spec in enumerate(specs):
        pid = str(10000 + id_offset + index)
        if spec.team_managed:
            ptypes = gen.team_types(pid, spec, next_type_id)
            next_type_id += len(ptypes)
            pstatuses = gen.team_statuses(pid, spec, next_status_id)
            next_status_id += len(pstatuses)
            issue_types += ptypes
            statuses += pstatuses
            weights = {"new": 3.0, "indeterminate": 3.0, "done": 5.0}
            workflow = [(s, weights[s["statusCategory"]["key"]]) for s in pstatuses]
        else:
            if spec.type_key == "software":
                names = ["Epic", "Story", "Task", "Bug", "Sub-task"]
            elif spec.type_key == "business":
                names = ["Epic", "Task", "Sub-task"]
            else:
                names = ["[System] Service request", "[System] Incident", "Task", "Sub-task"]
            ptypes = [types_by_name[n] for n in names]
            done_name = {"de": "Erledigt", "ja": "完了"}.get(spec.lang, "Done")
            workflow = [
                (status_by_name[done_name if n == "Done" else n], w) for n, w in _CLASSIC_WORKFLOWS[spec.type_key]
            ]
        lead = users[rng.randrange(len(users))]
        projects.append(gen.project(index, spec, lead, [dict(t) for t in ptypes]))
        project_types.append(ptypes)
        project_statuses.append(workflow)
        comps = []
        for name in rng.sample(component_pool, rng.randint(0, 4)):
            comps.append(
                {"self": f"{base}/rest/api/3/component/{next_component}", "id": str(next_component), "name": name}
            )
            next_component += 1
        components[pid] = comps

    # ---- issue drafts: topic, language, project, dates ---------------------------------
    order = list(corpus.topics())
    rng.shuffle(order)
    by_lang: dict[str, list[int]] = {}
    for index, spec in enumerate(specs):
        if spec.weight > 0:
            by_lang.setdefault(spec.lang, []).append(index)
    any_project = [i for i, s in enumerate(specs) if s.weight > 0] or list(range(len(specs)))
    en_weights = [(s.weight if s.lang == "en" else s.weight * 0.25) for s in specs]
    if not any(en_weights):
        en_weights = [1.0] * len(specs)
    span = (_CREATED_TO - _CREATED_FROM).total_seconds()
    drafts: list[_Draft] = []
    for n in range(n_issues):
        topic = order[n % len(order)]
        langs = [lang for lang in topic.texts if lang != "en"]
        lang = "en"
        if langs and rng.random() < 0.35:
            lang = rng.choice(langs)
        if lang != "en" and by_lang.get(lang):
            spec_index = rng.choice(by_lang[lang])
        elif lang != "en":
            spec_index = rng.choice(any_project)
        else:
            spec_index = rng.choices(range(len(specs)), weights=en_weights)[0]
        created = _CREATED_FROM + timedelta(seconds=rng.random() * span)
        age = (SITE_NOW - created).total_seconds()
        bump = min(age * rng.random() ** 2, rng.expovariate(1 / (30 * 86400)))
        updated = created + timedelta(seconds=bump)
        if rng.random() < 0.15:  # never edited after creation
            updated = created
        drafts.append(_Draft(topic, lang, spec_index, created, updated))
    drafts.sort(key=lambda d: d.created)

    # ---- issues ------------------------------------------------------------------------
    issues: list[dict[str, Any]] = []
    topics: dict[str, str] = {}
    languages: dict[str, str] = {}
    counters = [0] * len(specs)
    earlier: list[list[dict[str, Any]]] = [[] for _ in specs]
    # The earlier issues of each project by hierarchy level, in creation order: scanning ``earlier``
    # for them at each issue made a 100,000-issue site take half an hour (quadratic per project).
    by_level: list[dict[int, list[dict[str, Any]]]] = [{} for _ in specs]
    long_budget = 6 if n_issues >= 30 else min(n_issues, 1 if n_issues >= 5 else 0)
    long_topics: set[str] = set()
    long_keys: list[str] = []
    for n, draft in enumerate(drafts):
        spec = specs[draft.spec_index]
        project = projects[draft.spec_index]
        ptypes = project_types[draft.spec_index]
        counters[draft.spec_index] += 1
        issue_id = str(10000 + id_offset + n)
        key = f"{spec.key}-{counters[draft.spec_index]}"

        parents = by_level[draft.spec_index].get(0, [])
        epics = by_level[draft.spec_index].get(1, [])
        roll = rng.random()
        parent: dict[str, Any] | None = None
        subtask_type = next(t for t in ptypes if t["hierarchyLevel"] == -1)
        if parents and roll < 0.12:
            itype = subtask_type
            parent = rng.choice(parents)
        elif roll < 0.17 and any(t["hierarchyLevel"] == 1 for t in ptypes):
            itype = next(t for t in ptypes if t["hierarchyLevel"] == 1)
        else:
            std = [t for t in ptypes if t["hierarchyLevel"] == 0]
            type_weights = [2.5 if t["name"] == "Bug" else 1.0 for t in std]
            itype = rng.choices(std, weights=type_weights)[0]
            if epics and rng.random() < 0.3:
                parent = rng.choice(epics)

        status_objs, status_weights = zip(*project_statuses[draft.spec_index], strict=True)
        status = rng.choices(status_objs, weights=status_weights)[0]
        category = status["statusCategory"]["key"]
        reporter = rng.choice(users[:-1])
        assignee = None if rng.random() < 0.2 else rng.choice(users)

        is_long = (
            len(long_keys) < long_budget
            and draft.lang == "en"
            and itype["hierarchyLevel"] == 0
            and draft.topic.id not in long_topics
            and n % 7 == 3
        )
        summaries = draft.topic.texts.get(draft.lang, draft.topic.texts["en"]).summaries
        summary = rng.choice(summaries)
        if itype["hierarchyLevel"] == -1 and rng.random() < 0.5:
            summary = rng.choice(("Investigate: ", "Fix: ", "Add test: ")) + summary
        related = [f"{base}/browse/{i['key']}" for i in earlier[draft.spec_index][-5:]]
        if is_long:
            description: dict[str, Any] | None = gen.long_description(draft.topic, users, draft.created)
            long_topics.add(draft.topic.id)
            long_keys.append(key)
        elif rng.random() < 0.03:
            description = None
        else:
            description = gen.description(draft.topic, draft.lang, users, draft.created, related)

        created_s = format_jira_timestamp(draft.created)
        updated_s = format_jira_timestamp(draft.updated)
        fields = base_fields(
            base,
            summary=summary,
            description=description,
            itype=itype,
            status=status,
            project=project,
            priority=PRIORITIES[min(4, max(0, int(rng.gauss(2, 1))))],
            reporter=reporter,
            assignee=assignee,
            created=created_s,
            updated=updated_s,
            rank=f"0|i{n:05x}:",
        )
        fields["watches"]["self"] = f"{base}/rest/api/3/issue/{key}/watchers"
        fields["watches"]["watchCount"] = rng.randint(0, 4)
        if category != "new":
            change = draft.created + (draft.updated - draft.created) * rng.random()
            fields["statuscategorychangedate"] = format_jira_timestamp(change)
        if category == "done":
            name = status["name"].lower()
            res = "won't do" if name == "won't do" else "done"
            if res == "done" and itype["name"] == "Bug" and rng.random() < 0.2:
                res = rng.choice(("duplicate", "cannot reproduce"))
            rid, rdesc = _RESOLUTIONS[res]
            fields["resolution"] = {
                "self": f"{base}/rest/api/3/resolution/{rid}",
                "id": rid,
                "description": rdesc,
                "name": _RESOLUTION_NAMES[res],
            }
            fields["resolutiondate"] = fields["statuscategorychangedate"]
        labels = set(rng.sample(draft.topic.labels, rng.randint(0, len(draft.topic.labels))))
        if rng.random() < 0.25:
            labels.add(rng.choice(("customer-reported", "regression", "tech-debt", "needs-triage", "hotfix")))
        if draft.lang == "de" and rng.random() < 0.3:
            labels.add("dringend")
        fields["labels"] = sorted(labels)
        comps = components[project["id"]]
        if comps:
            picked = rng.sample(comps, rng.randint(0, min(2, len(comps))))
            fields["components"] = [dict(c) for c in sorted(picked, key=lambda c: c["id"])]
        if rng.random() < 0.1:
            fields["duedate"] = f"{draft.created + timedelta(days=rng.randint(5, 60)):%Y-%m-%d}"
        if parent is not None:
            fields["parent"] = {"id": parent["id"]}  # expanded by _refresh_links

        issue = {
            "id": issue_id,
            "key": key,
            "self": f"{base}/rest/api/3/issue/{issue_id}",
            "fields": fields,
        }
        issues.append(issue)
        earlier[draft.spec_index].append(issue)
        by_level[draft.spec_index].setdefault(fields["issuetype"]["hierarchyLevel"], []).append(issue)
        topics[key] = draft.topic.id
        languages[key] = draft.lang

    site = JiraSite(
        base_url=base,
        projects=projects,
        issue_types=issue_types,
        statuses=statuses,
        issues=issues,
        topics=topics,
        languages=languages,
        long_issue_keys=long_keys,
        components=components,
        users=users,
    )
    site._next_issue_id = 10000 + id_offset + n_issues
    site._refresh_links()
    documents.enrich(site, seed)
    return site


def labelled_queries(site: JiraSite) -> list[tuple[str, list[str]]]:
    """Natural-language queries, each with the keys of the issues on its topic.

    Relevant keys cover every language the topic's issues were written in; queries
    whose topic has no issue left in ``site`` are omitted.
    """
    by_topic: dict[str, list[str]] = {}
    for issue in site.issues:
        topic = site.topics.get(issue["key"])
        if topic is not None:
            by_topic.setdefault(topic, []).append(issue["key"])
    out = []
    for query, topic in corpus.query_topics():
        keys = by_topic.get(topic)
        if keys:
            out.append((query, sorted(keys, key=key_sort)))
    return out


@cache
def _default_queries() -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((q, tuple(k)) for q, k in labelled_queries(generate_sample_site()))


def default_labelled_queries() -> list[tuple[str, list[str]]]:
    """:func:`labelled_queries` of the default site, computed once per process."""
    return [(q, list(keys)) for q, keys in _default_queries()]
