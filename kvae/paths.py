"""Where kvae keeps what it builds: ``$KVAE_HOME``, else ``~/.cache/kvae``."""

import os
from pathlib import Path


def kvae_home():
    """Return kvae's own folder (caches, the embedded dataset), creating nothing."""
    home = os.environ.get("KVAE_HOME")
    if home:
        return Path(home).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kvae"
