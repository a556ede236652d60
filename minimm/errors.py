"""The error for a user's mistake (layer 0: imports nothing from minimm, so any layer can
raise it)."""


class UsageError(ValueError):
    """Something the user asked for cannot be done as asked: a bad argument, a missing or
    unreadable file, a checkpoint of another model, data that cannot be had.

    The message says what is wrong and what to do. The command line prints it as one line
    ``error: ...`` on stderr, without a traceback, and exits with code 2. It is a ValueError,
    so library callers that catch ValueError catch it too.
    """


__all__ = ["UsageError"]
