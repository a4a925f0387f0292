"""The JQL subset the sample site evaluates, with Jira Cloud's error messages.

Fields: ``project``, ``key``/``issuekey``, ``id``, ``updated``/``created`` (also
``updatedDate``/``createdDate``), ``issuetype``/``type``, ``status``, ``statusCategory``
with ``= != > >= < <= in, not in``; ``IS [NOT] EMPTY``; ``AND``, ``OR``, ``NOT``,
parentheses; ``ORDER BY`` on ``updated``, ``created``, ``key``, ``id``, ``project``. Date
values use Jira's formats (``"yyyy-MM-dd HH:mm"``, ``"yyyy/MM/dd HH:mm"``,
``yyyy-MM-dd``, ``yyyy/MM/dd``) at minute granularity, read as wall time in the API user's
zone (``JiraSite.time_zone``, as Jira does; where a DST change makes a wall time ambiguous or
skipped, the later of its readings: the one that makes an incremental query miss most), or
relative periods such as ``-5m``, ``-2d`` or ``"-1w 2d"``. As on
Jira Cloud, a project or issue key that does not exist is an error, and a query with no
search restriction is refused as unbounded. Fields Jira has but the site does not
evaluate are refused by name rather than silently matched.

Written by hand because no JQL evaluator exists as a Python library; it only has to be
as faithful as the sync's queries need.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from etl_assets.core.sources.jira.sample.site import CATEGORY_OBJ, JiraSite, key_sort, stored_datetime

__all__ = ["JqlError", "run_jql"]


class JqlError(ValueError):
    """A JQL problem, reported to the client as a 400 with this message."""


_JQL_PREFIX = "Error in the JQL Query: "
_OPERATORS_HINT = (
    "The valid operators are '=', '!=', '<', '>', '<=', '>=', '~', '!~', 'IN', 'NOT IN', 'IS' and 'IS NOT'."
)
_RESERVED = {"and", "or", "not", "order", "by", "in", "is", "empty", "null"}
_KNOWN_UNSUPPORTED = {
    "assignee",
    "reporter",
    "creator",
    "summary",
    "description",
    "text",
    "labels",
    "label",
    "priority",
    "resolution",
    "resolved",
    "component",
    "components",
    "sprint",
    "fixversion",
    "affectedversion",
    "duedate",
    "due",
    "parent",
    "comment",
    "watcher",
    "votes",
    "environment",
    "statuscategorychangeddate",
    "filter",
    "issuefunction",
    "lastviewed",
    "resolutiondate",
}
_DATE_FIELDS = {
    "updated": "updated",
    "updateddate": "updated",
    "created": "created",
    "createddate": "created",
}
_NEVER_EMPTY = {
    "project",
    "key",
    "issuekey",
    "id",
    "issuetype",
    "type",
    "status",
    "statuscategory",
    "priority",
    "reporter",
    "creator",
    "summary",
}
_MAYBE_EMPTY = {
    "assignee": "assignee",
    "resolution": "resolution",
    "parent": "parent",
    "duedate": "duedate",
    "due": "duedate",
    "description": "description",
    "resolutiondate": "resolutiondate",
    "resolved": "resolutiondate",
    "labels": "labels",
    "component": "components",
    "components": "components",
    "environment": "environment",
}
_SORTABLE = {"updated", "updateddate", "created", "createddate", "key", "issuekey", "id", "project"}
_TOKEN_RE = re.compile(
    r"""\s*(?:
      (?P<op>!=|>=|<=|!~|=|>|<|~)
    | (?P<lpar>\()
    | (?P<rpar>\))
    | (?P<comma>,)
    | (?P<quote>["'])
    | (?P<word>[^\s=!<>~(),"']+)
    )""",
    re.VERBOSE,
)
_RELATIVE_RE = re.compile(r"^([-+]?)((?:\d+[wdhm]\s*)+)$")
_REL_PART_RE = re.compile(r"(\d+)([wdhm])")
_DATE_FORMATS = ("%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d", "%Y/%m/%d")
_ISSUE_KEY_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)-(\d+)$")


@dataclass(frozen=True)
class _Tok:
    kind: str  # op | lpar | rpar | comma | str | word | eof
    value: str
    pos: int  # 1-based character position


def _tokenize(jql: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    i = 0
    while i < len(jql):
        match = _TOKEN_RE.match(jql, i)
        if match is None or match.end() == i:
            rest = jql[i:]
            if not rest.strip():
                break
            pos = i + len(rest) - len(rest.lstrip())
            char = jql[pos]
            raise JqlError(
                f"{_JQL_PREFIX}The character '{char}' is a reserved JQL character. You "
                f"must enclose it in a string or use the escape '\\u{ord(char):04x}' "
                f"instead. (line 1, character {pos + 1})"
            )
        start = match.start(match.lastgroup) if match.lastgroup else i
        kind = match.lastgroup
        if kind == "quote":
            quote_char = match.group("quote")
            j, buf = match.end(), []
            while j < len(jql) and jql[j] != quote_char:
                if jql[j] == "\\" and j + 1 < len(jql):
                    j += 1
                buf.append(jql[j])
                j += 1
            if j >= len(jql):
                raise JqlError(
                    f"{_JQL_PREFIX}The quoted string '{''.join(buf)}' has not been "
                    f"completed. (line 1, character {start + 1})"
                )
            tokens.append(_Tok("str", "".join(buf), start + 1))
            i = j + 1
            continue
        if kind is None:  # only whitespace left
            i = match.end()
            continue
        tokens.append(_Tok(kind, match.group(kind), start + 1))
        i = match.end()
    tokens.append(_Tok("eof", "", len(jql) + 1))
    return tokens


_Pred = Callable[[dict[str, Any]], bool]


@dataclass
class _Query:
    where: _Pred | None
    order: list[tuple[str, bool]]  # (field, descending)


class _Parser:
    def __init__(self, jql: str, site: JiraSite, now: datetime) -> None:
        self.tokens = _tokenize(jql)
        self.i = 0
        self.site = site
        self.now = now

    # ---- token helpers ---------------------------------------------------------------

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "word" and tok.value.lower() in words

    @staticmethod
    def where(tok: _Tok) -> str:
        return f"(line 1, character {tok.pos})"

    # ---- grammar -------------------------------------------------------------------

    def parse(self) -> _Query:
        where = None
        if self.peek().kind != "eof" and not self.at_word("order"):
            where = self.parse_or()
        order: list[tuple[str, bool]] = []
        if self.at_word("order"):
            self.take()
            if not self.at_word("by"):
                tok = self.peek()
                got = f"'{tok.value}'" if tok.kind != "eof" else "the end of the query"
                raise JqlError(f"{_JQL_PREFIX}Expecting 'by' but got {got}. {self.where(tok)}")
            self.take()
            order = self.parse_order()
        tok = self.peek()
        if tok.kind != "eof":
            raise JqlError(f"{_JQL_PREFIX}Expecting either 'OR' or 'AND' but got '{tok.value}'. {self.where(tok)}")
        return _Query(where, order)

    def parse_or(self) -> _Pred:
        parts = [self.parse_and()]
        while self.at_word("or"):
            self.take()
            parts.append(self.parse_and())
        if len(parts) == 1:
            return parts[0]
        return lambda issue: any(p(issue) for p in parts)

    def parse_and(self) -> _Pred:
        parts = [self.parse_unary()]
        while self.at_word("and"):
            self.take()
            parts.append(self.parse_unary())
        if len(parts) == 1:
            return parts[0]
        return lambda issue: all(p(issue) for p in parts)

    def parse_unary(self) -> _Pred:
        if self.at_word("not"):
            self.take()
            inner = self.parse_unary()
            return lambda issue: not inner(issue)
        tok = self.peek()
        if tok.kind == "lpar":
            self.take()
            inner = self.parse_or()
            close = self.peek()
            if close.kind != "rpar":
                if close.kind == "eof":
                    raise JqlError(f"{_JQL_PREFIX}Expecting ')' before the end of the query.")
                raise JqlError(f"{_JQL_PREFIX}Expecting ')' but got '{close.value}'. {self.where(close)}")
            self.take()
            return inner
        return self.parse_clause()

    def parse_clause(self) -> _Pred:
        tok = self.take()
        if tok.kind == "eof":
            raise JqlError(f"{_JQL_PREFIX}Expecting a field name before the end of the query.")
        if tok.kind not in ("word", "str") or (tok.kind == "word" and tok.value.lower() in _RESERVED):
            raise JqlError(f"{_JQL_PREFIX}Expecting a field name but got '{tok.value}'. {self.where(tok)}")
        name = tok.value
        field_id = name.lower()
        op_tok = self.peek()
        if op_tok.kind == "op":
            self.take()
            op = op_tok.value
        elif self.at_word("in"):
            self.take()
            op = "in"
        elif self.at_word("not"):
            self.take()
            if not self.at_word("in"):
                nxt = self.peek()
                raise JqlError(f"{_JQL_PREFIX}Expecting 'IN' after 'NOT' but got '{nxt.value}'. {self.where(nxt)}")
            self.take()
            op = "not in"
        elif self.at_word("is"):
            self.take()
            negate = self.at_word("not")
            if negate:
                self.take()
            what = self.take()
            if what.kind != "word" or what.value.lower() not in ("empty", "null"):
                got = "the end of the query" if what.kind == "eof" else f"'{what.value}'"
                raise JqlError(f"{_JQL_PREFIX}Expecting 'EMPTY' or 'NULL' after 'IS' but got {got}.")
            return self.compile_empty(name, field_id, negate)
        elif self.at_word("was", "changed"):
            bad = self.take()
            raise JqlError(
                f"{_JQL_PREFIX}The operator '{bad.value.upper()}' is not supported by the "
                f"sample Jira site. {self.where(bad)}"
            )
        elif op_tok.kind == "eof":
            raise JqlError(f"{_JQL_PREFIX}Expecting operator before the end of the query. {_OPERATORS_HINT}")
        else:
            raise JqlError(
                f"{_JQL_PREFIX}Expecting operator but got '{op_tok.value}'. {_OPERATORS_HINT} {self.where(op_tok)}"
            )
        values = self.parse_values(op)
        self.check_field(name, field_id)
        return self.compile_clause(name, field_id, op, values)

    def parse_values(self, op: str) -> list[str]:
        if op in ("in", "not in"):
            open_tok = self.peek()
            if open_tok.kind != "lpar":
                return [self.parse_value()]
            self.take()
            values = [self.parse_value()]
            while self.peek().kind == "comma":
                self.take()
                values.append(self.parse_value())
            close = self.peek()
            if close.kind != "rpar":
                if close.kind == "eof":
                    raise JqlError(f"{_JQL_PREFIX}Expecting ')' before the end of the query.")
                raise JqlError(f"{_JQL_PREFIX}Expecting ',' or ')' but got '{close.value}'. {self.where(close)}")
            self.take()
            return values
        return [self.parse_value()]

    def parse_value(self) -> str:
        tok = self.take()
        if tok.kind == "str":
            return tok.value
        if tok.kind == "word":
            if tok.value.lower() in _RESERVED:
                raise JqlError(
                    f"{_JQL_PREFIX}Expecting either a value, list or function but got "
                    f"'{tok.value}'. You must surround '{tok.value}' in quotation marks "
                    f"to use it as a value. {self.where(tok)}"
                )
            if self.peek().kind == "lpar":
                raise JqlError(
                    f"{_JQL_PREFIX}The function '{tok.value}' is not supported by the "
                    f"sample Jira site. {self.where(tok)}"
                )
            return tok.value
        if tok.kind == "eof":
            raise JqlError(f"{_JQL_PREFIX}Expecting either a value, list or function before the end of the query.")
        raise JqlError(
            f"{_JQL_PREFIX}Expecting either a value, list or function but got '{tok.value}'. {self.where(tok)}"
        )

    def parse_order(self) -> list[tuple[str, bool]]:
        order: list[tuple[str, bool]] = []
        while True:
            tok = self.take()
            if tok.kind not in ("word", "str"):
                got = "the end of the query" if tok.kind == "eof" else f"'{tok.value}'"
                raise JqlError(f"{_JQL_PREFIX}Expecting a field name but got {got}.")
            name = tok.value.lower()
            if name not in _SORTABLE:
                raise JqlError(f"Not able to sort using field '{tok.value}'.")
            desc = False
            if self.at_word("asc", "desc"):
                desc = self.take().value.lower() == "desc"
            order.append((name, desc))
            if self.peek().kind != "comma":
                break
            self.take()
        if len(order) > 7:
            raise JqlError("The ORDER BY clause can contain a maximum of 7 fields.")
        return order

    # ---- semantics -------------------------------------------------------------------

    @staticmethod
    def check_field(name: str, field_id: str) -> None:
        supported = {"project", "key", "issuekey", "id", "issuetype", "type", "status"}
        if field_id in supported or field_id in _DATE_FIELDS or field_id == "statuscategory":
            return
        if field_id in _KNOWN_UNSUPPORTED or field_id.startswith("cf["):
            raise JqlError(f"{_JQL_PREFIX}Searching by field '{name}' is not supported by the sample Jira site.")
        raise JqlError(f"Field '{name}' does not exist or you do not have permission to view it.")

    @staticmethod
    def compile_empty(name: str, field_id: str, negate: bool) -> _Pred:
        """``field IS [NOT] EMPTY``; fields that always have a value are never empty."""
        if field_id in _NEVER_EMPTY or field_id in _DATE_FIELDS:
            return lambda issue: negate
        attr = _MAYBE_EMPTY.get(field_id)
        if attr is None:
            _Parser.check_field(name, field_id)
            raise JqlError(f"The operator 'IS' is not supported by the '{name}' field.")

        def is_empty(issue: dict[str, Any]) -> bool:
            return not issue["fields"].get(attr)

        return (lambda issue: not is_empty(issue)) if negate else is_empty

    def compile_clause(self, name: str, field_id: str, op: str, values: list[str]) -> _Pred:
        if field_id in _DATE_FIELDS:
            return self.compile_date(name, _DATE_FIELDS[field_id], op, values)
        if op not in ("=", "!=", "in", "not in"):
            raise JqlError(f"The operator '{op}' is not supported by the '{name}' field.")
        if field_id == "project":
            wanted = {self.project_id(v) for v in values}

            def get(issue: dict[str, Any]) -> str:
                return issue["fields"]["project"]["id"]
        elif field_id in ("key", "issuekey", "id"):
            wanted = {self.issue_id(v, name) for v in values}

            def get(issue: dict[str, Any]) -> str:
                return issue["id"]
        elif field_id in ("issuetype", "type"):
            wanted = self.named_ids(self.site.issue_types, values, "issuetype")

            def get(issue: dict[str, Any]) -> str:
                return issue["fields"]["issuetype"]["id"]
        elif field_id == "status":
            wanted = self.named_ids(self.site.statuses, values, "status")

            def get(issue: dict[str, Any]) -> str:
                return issue["fields"]["status"]["id"]
        else:  # statusCategory
            wanted = set()
            for value in values:
                lowered = value.lower()
                hits = {
                    key for key, (cid, _, cname) in CATEGORY_OBJ.items() if lowered in (key, cname.lower(), str(cid))
                }
                if not hits:
                    raise JqlError(f"The value '{value}' does not exist for the field 'statusCategory'.")
                wanted |= hits

            def get(issue: dict[str, Any]) -> str:
                return issue["fields"]["status"]["statusCategory"]["key"]

        if op in ("=", "in"):
            return lambda issue: get(issue) in wanted
        return lambda issue: get(issue) not in wanted

    def project_id(self, value: str) -> str:
        lowered = value.lower()
        for project in self.site.projects:
            if lowered in (project["key"].lower(), project["id"], project["name"].lower()):
                return project["id"]
        raise JqlError(f"The value '{value}' does not exist for the field 'project'.")

    def issue_id(self, value: str, name: str) -> str:
        if value.isdigit():
            for issue in self.site.issues:
                if issue["id"] == value:
                    return value
            raise JqlError(f"An issue with key '{value}' does not exist for field '{name}'.")
        if not _ISSUE_KEY_RE.match(value):
            raise JqlError(f"The issue key '{value}' for field '{name}' is invalid.")
        upper = value.upper()
        for issue in self.site.issues:
            if issue["key"] == upper:
                return issue["id"]
        raise JqlError(f"An issue with key '{value}' does not exist for field '{name}'.")

    @staticmethod
    def named_ids(objs: list[dict[str, Any]], values: list[str], field_name: str) -> set[str]:
        wanted: set[str] = set()
        for value in values:
            lowered = value.lower()
            hits = {o["id"] for o in objs if lowered in (o["id"], o["name"].lower())}
            if not hits:
                raise JqlError(f"The value '{value}' does not exist for the field '{field_name}'.")
            wanted |= hits
        return wanted

    def compile_date(self, name: str, attr: str, op: str, values: list[str]) -> _Pred:
        if op in ("in", "not in", "~", "!~"):
            raise JqlError(f"The operator '{op}' is not supported by the '{name}' field.")
        bound = self.parse_date(values[0], name)
        upper = bound + timedelta(minutes=1)
        compare: dict[str, Callable[[datetime], bool]] = {
            ">=": lambda ts: ts >= bound,
            ">": lambda ts: ts > bound,
            "<=": lambda ts: ts <= bound,
            "<": lambda ts: ts < bound,
            "=": lambda ts: bound <= ts < upper,
            "!=": lambda ts: not (bound <= ts < upper),
        }
        check = compare[op]
        return lambda issue: check(stored_datetime(issue["fields"][attr]))

    def parse_date(self, value: str, name: str) -> datetime:
        text = value.strip()
        rel = _RELATIVE_RE.match(text)
        if rel:
            delta = timedelta()
            units = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}
            for amount, unit in _REL_PART_RE.findall(rel.group(2)):
                delta += timedelta(**{units[unit]: int(amount)})
            moment = self.now - delta if rel.group(1) == "-" else self.now + delta
            return moment.replace(second=0, microsecond=0)
        zone = ZoneInfo(self.site.time_zone)
        for fmt in _DATE_FORMATS:
            try:
                wall = datetime.strptime(text, fmt)
            except ValueError:
                continue
            return max(wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
        raise JqlError(
            f"Date value '{value}' for field '{name}' is invalid. Valid formats include: "
            "'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a "
            "period format e.g. '-5d', '4w 2d'."
        )


def _sort_value(issue: dict[str, Any], name: str) -> Any:
    if name in ("updated", "updateddate"):
        return stored_datetime(issue["fields"]["updated"])
    if name in ("created", "createddate"):
        return stored_datetime(issue["fields"]["created"])
    if name in ("key", "issuekey"):
        return key_sort(issue["key"])
    if name == "project":
        return issue["fields"]["project"]["key"]
    return int(issue["id"])


def run_jql(site: JiraSite, jql: str, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Issues of ``site`` matching ``jql``, in the query's order (raises JqlError)."""
    query = _Parser(jql, site, now or datetime.now(UTC)).parse()
    if query.where is None:
        raise JqlError("Unbounded JQL queries are not allowed here. Please add a search restriction to your query.")
    hits = [i for i in site.issues if query.where(i)]
    order = query.order or [("created", True)]
    hits.sort(key=lambda i: int(i["id"]), reverse=order[0][1])  # stable tie-break
    for name, desc in reversed(order):
        hits.sort(key=functools.partial(_sort_value, name=name), reverse=desc)
    return hits
