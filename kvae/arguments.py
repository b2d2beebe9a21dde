"""Every number a `kvae` subcommand takes, checked in one place before the command starts any work.

`check(args)` runs first in `kvae.cli.main`: each flag of `CHECKS[command]` is
checked against its row of `kvae.bounds.BOUNDS` and refused on one line
naming the flag itself (`--seed: must be from 0 to 4.29497e+09, got -1`), so a
bad value never costs a trained prior, a loaded model or a written file.
The Python API checks the same rows under its own argument names.
"""

from kvae import bounds
from kvae.errors import KvaeError

# command: ((attribute of the parsed arguments, row of kvae.bounds.BOUNDS, flag), ...)
CHECKS = {
    "sample": (("n", "clips", "-n"), ("seed", "seed", "--seed")),
    "evaluate": (("n_clips", "n_clips", "--n-clips"), ("seed", "seed", "--seed")),
    "gallery": (("n_clips", "n_clips", "--n-clips"), ("seed", "seed", "--seed")),
    "generate": (("seconds", "seconds", "--seconds"), ("temperature", "temperature", "--temperature"),
                 ("seed", "seed", "--seed"), ("n", "pieces", "-n")),
    "reconstruct": (("block_ms", "block_ms", "--block-ms"),),
}
"""(`kvae fit`, `kvae prior fit` and `kvae tune` put `--epochs` and the like into their config, whose validation
names the setting, `train.epochs`, before any work.)"""


def check_pieces(pieces, seconds, labels=("pieces", "piece_seconds")):
    """`(pieces, seconds)` for a prior fit's pieces: 0 pieces (their length unchecked), or 1 to 1024 of a
    length within `seconds`'s bounds; one line naming `labels` otherwise."""
    if isinstance(pieces, (int, float)) and not isinstance(pieces, bool) and pieces == 0:
        return 0, seconds
    return bounds.check("pieces", pieces, labels[0]), bounds.check("seconds", seconds, labels[1])


def check(args):
    """Refuse, on one line naming the flag, a parsed argument out of its bounds; `args` is left as given.

    Raises:
        KvaeError: a value out of range, NaN or infinite.
    """
    for attribute, row, flag in CHECKS.get(args.command, ()):
        value = getattr(args, attribute, None)
        if value is not None:
            bounds.check(row, value, flag)
    if args.command == "prior":
        check_pieces(args.pieces, args.piece_seconds, ("--pieces", "--piece-seconds"))
    if args.command == "evaluate" and args.out and args.plot and _same(args.out, args.plot):
        raise KvaeError(f"--out and --plot: the same file ({args.out}); give the report and the plot each a name")


def _same(a, b):
    from pathlib import Path

    return Path(a).expanduser().absolute() == Path(b).expanduser().absolute()
