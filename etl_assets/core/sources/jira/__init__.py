"""Jira Cloud REST v3: client, JQL, parsers, ADF, entity specs and tables."""
