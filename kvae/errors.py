"""The one exception type kvae raises for bad input: its message is one line."""


class KvaeError(Exception):
    """A user-facing error; the command line prints its message on one line, no traceback."""
