"""Jira's entity tables, declared on the shared schema metadata."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Integer, String, Text

from etl_assets.core.store.schema import TS, entity_table

projects = entity_table(
    "projects",
    Column("key", String(64), nullable=False),
    Column("name", String(1000), nullable=False),
    Column("description", Text),
    Column("category", String(1000)),
    Column("project_type", String(64)),
    Column("management", String(32)),
    Column("lead", String(1000)),
    Column("url", String(2000)),
    Column("icon_url", String(2000)),
)

wits = entity_table(
    "wits",
    Column("name", String(1000), nullable=False),
    Column("description", Text),
    Column("hierarchy_level", Integer),
    Column("subtask", Boolean),
    Column("scope_type", String(32)),
    Column("scope_project_id", String(64)),
    Column("icon_url", String(2000)),
)

statuses = entity_table(
    "statuses",
    Column("name", String(1000), nullable=False),
    Column("description", Text),
    Column("category_key", String(64)),
    Column("category_name", String(1000)),
    Column("scope_type", String(32)),
    Column("scope_project_id", String(64)),
    Column("icon_url", String(2000)),
)

issues = entity_table(
    "issues",
    Column("key", String(64), nullable=False),
    Column("summary", String(2000), nullable=False),
    Column("description", Text),
    # References by (tenant, Jira id), checked by the issues table's blocking check.
    Column("project_external_id", String(64)),
    Column("project_key", String(64)),
    Column("wit_external_id", String(64)),
    Column("wit_name", String(1000)),
    Column("status_external_id", String(64)),
    Column("status_name", String(1000)),
    Column("status_category", String(64)),
    Column("priority", String(1000)),
    Column("labels", JSON, nullable=False),
    Column("components", JSON, nullable=False),
    Column("assignee", String(1000)),
    Column("reporter", String(1000)),
    Column("resolution", String(1000)),
    Column("parent_key", String(64)),
    Column("created", TS),
    Column("updated", TS, nullable=False),
    # Added by schema version 3 (comments, history, links, custom fields):
    Column("links", JSON),  # [{"relation": "blocks", "key": "PAY-3"}, ...] incl. parent and sub-tasks
    Column("attachments", JSON),  # [{"name": ..., "type": ...}]
    Column("history", Text),  # the changelog digest, one line per transition
    Column("resolved_at", TS),
    Column("status_changed_at", TS),
    Column("custom_fields", JSON),  # {"Story Points": {"text": "5", "value": 5}, ...}
    Column("comments_total", Integer),
    Column("comments_incomplete", String(1000)),  # why the comment list is incomplete, else NULL
    Column("history_incomplete", String(1000)),  # why the changelog is incomplete, else NULL
    # Added by schema version 5: what access depends on (parsers.access_facts); NULL on rows
    # written before it, which the permission stage treats as unknown (fail safe).
    Column("access_facts", JSON),
)

comments = entity_table(
    "comments",
    # The comment's issue, by (tenant, Jira id); written in the issues table's transaction.
    Column("issue_external_id", String(64), nullable=False, index=True),
    Column("issue_key", String(64), nullable=False),
    Column("project_key", String(64)),
    Column("issue_type", String(1000)),
    Column("author", String(1000)),
    Column("author_account_id", String(128)),
    Column("created", TS),
    Column("updated", TS),
    Column("body", Text),
    Column("visibility", String(1000)),  # "role:Developers" / "group:jira-admins"; NULL = everyone
    # Added by schema version 5: {"visibility": {"type", "identifier", "value"} or null}; NULL on
    # rows written before it (the permission stage then falls back on ``visibility``).
    Column("access_facts", JSON),
)
