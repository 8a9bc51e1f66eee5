"""The errors a user can fix: the `mcm` command prints their message and exits with status 2.

Every other exception is a bug of mcm (or of a library under it) and keeps its traceback.
Why a base class rather than catching ``ValueError`` at the command line: a ``ValueError``
also comes out of torch, numpy or a slip in our own code, and hiding such a traceback
behind one line would hide the bug. The classes also derive from the builtin the caller
already expects (``ValueError``), so ``except ValueError`` keeps working.

This module imports nothing: every floor may raise these.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (an argument, a config value, a path, a file's content): the message names
    it and the fix, in one or two lines."""


class InputError(UserError, ValueError):
    """A value the user gave is wrong (an argument, a setting, what a file holds)."""


class ConfigError(InputError):
    """A config value or key is wrong; the message names the dotted key, the value and the fix."""


__all__ = ["ConfigError", "InputError", "UserError"]
