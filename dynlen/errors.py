"""One exception type for every mistake a user can fix, and the one way commands report it.

Commands run their work through :func:`exit_status`, which prints a :class:`UserError` as one
line, so a bad path or a wrong configuration never ends in a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(ValueError):
    """A problem in the user's input, with a message that says how to fix it.

    A ``ValueError``, so Python callers that already catch bad values catch these too.
    """


def exit_status(action: Callable[[], int | None]) -> int:
    """Run a command's work; its status (0 when it returns None), or 2 after an ``error: …`` line."""
    try:
        status = action()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if status is None else status
