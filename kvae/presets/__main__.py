"""`python -m kvae.presets [--sync ROOT]`: list the built-in presets, or refresh a checkout's copies."""

import argparse
from pathlib import Path

from kvae.presets import KINDS, REPO_COPIES, preset_names, presets_dir, sync_copies


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kvae.presets", description=__doc__)
    parser.add_argument("--sync", metavar="ROOT", nargs="?", const=".",
                        help="rewrite " + ", ".join(f"ROOT/{folder}/" for folder in REPO_COPIES.values())
                             + " from the package's presets (default ROOT: .)")
    args = parser.parse_args(argv)
    if args.sync is not None:
        root = Path(args.sync)
        if not (root / "kvae" / "presets").is_dir():
            parser.error(f"{root}: not a kvae checkout (no kvae/presets/)")
        for path in sync_copies(root):
            print(f"updated {path}")
        return 0
    for kind in KINDS:
        print(f"{kind} presets ({presets_dir(kind)}): {', '.join(preset_names(kind))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
