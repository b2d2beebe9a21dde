"""The one exception type kvae raises for bad input: its message is one line."""


class KvaeError(Exception):
    """A user-facing error; the command line prints its message on one line, no traceback."""


class KvaeNote(UserWarning):
    """Something the user should know about a result that is still written (a clipped output, a history set
    aside); the command line prints it on one line as `kvae: warning: ...`."""
