"""What kvae 0.1 code and files still get from 0.2: old import paths and old names, each read with one line.

- `alias`: an old module path is the new module (the same object), with a `DeprecationWarning`.
- `renamed`: an old name read as its new one (a config key, a model argument, a flag), with a
  one-line `FutureWarning` (the `kvae` command prints it as `kvae: warning: ...`, through
  `one_line_warnings`).

Every rename is listed in CHANGELOG.md.
"""

import importlib
import sys
import warnings


def alias(old, new):
    """Make module `old` the module `new` (the same object: every name, private ones too), with a warning."""
    warnings.warn(f"{old} is deprecated since kvae 0.2; import {new}", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)


def renamed(old, new, where="", stacklevel=3):
    """Warn, on one line, that `old` was read as `new` (names joined by ", " for several); `where` says whose."""
    place = f"{where}: " if where else ""
    warnings.warn(f"{place}{old}: renamed {new} in kvae 0.2; read as such (update it)", FutureWarning,
                  stacklevel=stacklevel)


def one_line_warnings():
    """Within a `warnings.catch_warnings()` block: each of kvae's deprecation warnings (an old name read as
    its new one) is printed once, on one line, as `kvae: warning: ...`; other warnings as Python prints them."""
    from kvae.errors import KvaeNote

    shown, stock = set(), warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, (FutureWarning, KvaeNote)):
            return stock(message, category, filename, lineno, file, line)
        text = " ".join(str(message).split())
        if text not in shown:
            shown.add(text)
            print(f"kvae: warning: {text}", file=sys.stderr if file is None else file)

    warnings.simplefilter("always", FutureWarning)
    warnings.simplefilter("always", KvaeNote)
    warnings.showwarning = show
