"""User-facing errors.

Every problem a user can cause (a bad name, a missing file, a config that does not fit) is raised as
:class:`TtrlError` with a one-line message that says what was wrong and how to fix it. Scripts print
that line and exit with status 2 instead of a traceback.
"""

from __future__ import annotations


class TtrlError(Exception):
    """An error caused by the user's input; its message is one line: the problem and the fix."""
