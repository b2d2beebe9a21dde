"""`kvae gallery RUN [RUN ...]`: one static HTML page to listen to runs and compare them side by side.

The page (`index.html`) needs no server, no network and no JavaScript: open
it from disk in any browser. Beside it, one folder per run holds what the
page plays and shows, as 16-bit WAV and PNG files::

    index.html
    <run>/loss_curves.png
    <run>/real_<i>.wav, .png        held-out test windows (evenly spaced, as `kvae evaluate` picks them)
    <run>/recon_<i>.wav, .png       the model's reconstructions of those windows
    <run>/sample_<i>.wav, .png      prior samples (the run's samples/, else drawn now)
    <run>/piece_<i>.wav, .png       long generated pieces: the run's pieces/*.wav, when it has them
    <run>/eval.json                 only when the gallery ran the evaluation itself

Each run is one column, under the same row headings (config, loss curves,
evaluation, reconstructions, samples, pieces), so several runs line up for
comparison. The evaluation table is the run's `eval.json` (written by `kvae
evaluate RUN --out RUN/eval.json`), or a small evaluation run on request.

Every file is written atomically (`kvae.paths.atomic_path`), the page last,
and never over an input: the run folders are only read. The gallery writes
only into a folder it created, or one holding its marker
(`.kvae-gallery.json`, the list of files it wrote): it never replaces nor
deletes a file it did not write (`kvae.paths.OwnedFolder`).

The page carries a small inline script that runs only when its address ends
in `#selftest`: it loads every `<audio>` and `<img>` and writes the result as
JSON into `<pre id="selftest-result">`, which the browser test reads.

`files` reads run folders and writes the clips; `page` renders the HTML.
"""

import re
import sys
from pathlib import Path

from kvae import bounds
from kvae.errors import KvaeError
from kvae.evaluation.gallery.files import make_run_files, png_size, read_run, write_text
from kvae.paths import OwnedFolder, save_error
from kvae.runs import RunFolder
from kvae.evaluation.gallery.page import render_page

DEFAULT_EXAMPLES = 4  # test windows, reconstructions and samples shown per run
FIT_EXAMPLES = 3  # what the gallery written at the end of `kvae fit` shows (cheap: no evaluation)
MAX_EXAMPLES = 64
DEFAULT_EVAL_CLIPS = 64


def _slug(name, taken):
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "run"
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}-{k}", k + 1
    taken.add(slug)
    return slug


def _check_out(out, runs):
    """Refuse an output folder that is a file, a run folder, or would put a run's files into a run folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KvaeError(f"{out}: is a file; --out is a folder (default RUN/gallery)")
    resolved = out.resolve()
    for info in runs:
        run = info["path"].resolve()
        if resolved == run:
            raise KvaeError(f"{out}: is the run folder {info['path']}; choose another --out (default RUN/gallery)")
        target = (out / info["slug"]).resolve()
        for other in runs:
            o = other["path"].resolve()
            if target == o or target in o.parents:
                raise KvaeError(f"{out}: the gallery would write into the run folder {other['path']}; "
                                "choose another --out")


def write_gallery(runs, out=None, n=DEFAULT_EXAMPLES, evaluate=False, n_clips=DEFAULT_EVAL_CLIPS, seed=0,
                  data=None, cache=None, models=None, progress=None):
    """Write the listening gallery of one or several run folders.

    Args:
        runs: list of str or Path. Run folders (from `kvae fit`).
        out: str, Path or None. Output folder; defaults to `RUN/gallery` for
            one run and is required for several.
        n: int. Held-out windows (with their reconstructions) and prior
            samples shown per run. Defaults to 4.
        evaluate: bool. Evaluate runs that have no `eval.json` (with
            `n_clips` clips per set) and show that table; otherwise the page
            says how to evaluate.
        n_clips: int. Clips per set of that evaluation. Defaults to 64.
        seed: int. Seed of the windows, of samples drawn now and of the evaluation.
        data: str, Path or None. Dataset root for the reconstructions;
            default: each run's config.
        cache: str, Path or None. Cache folder; default: each run's config.
        models: dict or None. `{run folder: model}` already in memory (skips loading `model.keras`).
        progress: callable or None. Called with a short message per step.

    Returns:
        The path of `index.html`.

    Raises:
        KvaeError: a run folder is missing or not a run folder, `out` is
            missing for several runs or would write into a run folder, or
            `n` is out of range.
    """
    runs = [Path(r) for r in runs]
    if not runs:
        raise KvaeError("gallery: give at least one run folder")
    n, seed = int(n), bounds.check("seed", seed)
    if not 0 <= n <= MAX_EXAMPLES:
        raise KvaeError(f"-n: must be between 0 and {MAX_EXAMPLES}, got {n}")
    if out is None:
        if len(runs) > 1:
            raise KvaeError("--out: needed for several runs (one run defaults to RUN/gallery)")
        out = RunFolder(runs[0]).gallery
    out = Path(out)
    say = progress or (lambda message: None)
    infos, taken = [], set()
    for run in runs:
        info = read_run(run)
        info["name"] = (info["config"] or {}).get("name") or run.resolve().name
        info["slug"] = _slug(run.resolve().name, taken)
        infos.append(info)
    _check_out(out, infos)
    models = {Path(k).resolve(): v for k, v in (models or {}).items()}
    try:
        owned = OwnedFolder(out, "gallery")  # a new folder, or one an earlier gallery marked as its own
        shown = [make_run_files(info, owned, n, seed, models.get(info["path"].resolve()), evaluate, n_clips, data,
                                 cache, say) for info in infos]
        return write_text(owned.file("index.html"), render_page(infos, shown, rate_plot=_rate_plot(infos, shown, owned)))
    except OSError as exc:
        raise save_error(exc, out, "writing the gallery", then="run the command again") from None


def _rate_plot(infos, shown, owned):
    """`rate_realism.png` (paired reconstruction C2ST against bitrate) of the evaluated runs: `(src, size)` or None.

    Only runs whose evaluation has a rate and a paired C2ST are drawn; the
    ladder is the first such run's.
    """
    from kvae.evaluation.plots import plot_rate_realism

    rated = [(info["name"], s["eval"]) for info, s in zip(infos, shown)
             if isinstance(s.get("eval"), dict) and s["eval"].get("rate_bps") is not None
             and isinstance(s["eval"].get("reconstruction", {}).get("reconstructions"), dict)
             and s["eval"]["reconstruction"]["reconstructions"].get("paired_c2st") is not None]
    if not rated:
        owned.remove("rate_realism.png")  # an earlier gallery's figure of runs no longer shown
        return None
    path = owned.file("rate_realism.png")
    plot_rate_realism([r for _, r in rated], path, labels=[name for name, _ in rated])
    return path.name, png_size(path)


def fit_gallery(model, run_dir, config):
    """The gallery written at the end of `kvae fit` into `RUN/gallery/`: a few clips, no evaluation.

    Does nothing when `train.gallery` is false. A problem only warns: the
    trained model is already saved.

    Returns:
        The path of `index.html`, or None.
    """
    if not config.get("train", {}).get("gallery", True):
        return None
    try:
        return write_gallery([run_dir], RunFolder(run_dir).gallery, n=FIT_EXAMPLES, seed=config["train"]["seed"],
                             models={run_dir: model})
    except KvaeError as exc:
        print(f"kvae: warning: gallery not written: {exc}", file=sys.stderr)
        return None


__all__ = ["DEFAULT_EXAMPLES", "FIT_EXAMPLES", "fit_gallery", "read_run", "render_page", "write_gallery"]
