"""Jira Cloud REST v3: client, pagination, parsers, ADF to text and the bundled sample site."""
