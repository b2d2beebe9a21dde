"""What `kvae fit` prints last: where to listen to the run, and the commands that usually come next."""

import shlex
from pathlib import Path


def next_steps(run_dir, config):
    """Two or three lines: the gallery page (or how to make one), TensorBoard's command where it was on, what next.

    Args:
        run_dir: str or Path. The finished run folder.
        config: dict. Its resolved config (`train.gallery`, `train.tensorboard`).

    Returns:
        list of str, aligned like `kvae fit`'s other lines.
    """
    run = Path(run_dir)
    quoted = shlex.quote(str(run))
    page = run / "gallery" / "index.html"
    train = config.get("train", {})
    lines = [f"listen:     {page}  (open it in a browser)" if page.is_file() else
             f"listen:     kvae gallery {quoted}  (writes {page})"]
    if train.get("tensorboard"):
        lines.append(f"watch:      tensorboard --logdir {shlex.quote(str(run / 'tensorboard'))}")
    lines.append(f"next:       kvae evaluate {quoted} --out {shlex.quote(str(run / 'eval.json'))}; "
                 f"kvae prior fit {quoted}; kvae generate {quoted} --out {shlex.quote(str(run / 'piece.wav'))}")
    return lines
