"""Errors an operator can act on. Each message is one line naming what was wrong and where."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting, the tenants file or a tenant in it is wrong.

    The message names the file and line, or the variable, what is wrong and what is allowed;
    command-line entry points print it as one line and exit with code 2, without a traceback.
    """
