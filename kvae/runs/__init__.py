"""kvae.runs: the folders kvae's commands write, and every file in them, by name.

- `folder`: `RunFolder` (a run's, a prior's or a search trial's folder: its
  files, `lock`, `check_resume` against the one `RESUMABLE` table, `sweep` of
  stale temporaries), `run_lock`, and `check_output_file`, which keeps every
  command's output off a model, an input and a run's own files.
- `history`: `read_history`, the one reader of a run's `history.csv`, and
  `truncate_history`, what a resumed run drops.

It sits just above `kvae.paths` (atomic writes): data, models, training,
inference, evaluation and tuning all name a run's files through it.
"""

from kvae.runs.folder import (RESUMABLE, RUN_FILES, RunFolder, check_output_file, comparable, is_run_folder,
                              resumable, run_lock)
from kvae.runs.history import read_history, truncate_history

__all__ = ["RESUMABLE", "RUN_FILES", "RunFolder", "check_output_file", "comparable", "is_run_folder", "read_history",
           "resumable", "run_lock", "truncate_history"]
