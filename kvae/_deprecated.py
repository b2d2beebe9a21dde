"""Old import paths kept for kvae 0.1 code: each is the new module under its old name (see CHANGELOG.md)."""

import importlib
import sys
import warnings


def alias(old, new):
    """Make module `old` the module `new` (the same object: every name, private ones too), with a warning."""
    warnings.warn(f"{old} is deprecated since kvae 0.2; import {new}", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
