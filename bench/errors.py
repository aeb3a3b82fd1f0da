"""One exception type for every mistake a user can fix.

Commands catch :class:`UserError` at the top and print its message as one line, so
a bad path or a wrong configuration never ends in a traceback.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that says how to fix it."""
