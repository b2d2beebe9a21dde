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

Every file is written atomically (a temporary file, then `os.replace`), the
page last, and never over an input: the run folders are only read.

The page carries a small inline script that runs only when its address ends
in `#selftest`: it loads every `<audio>` and `<img>` and writes the result as
JSON into `<pre id="selftest-result">`, which the browser test reads.
"""

import html
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from kvae.errors import KvaeError

DEFAULT_EXAMPLES = 4  # test windows, reconstructions and samples shown per run
FIT_EXAMPLES = 3  # what the gallery written at the end of `kvae fit` shows (cheap: no evaluation)
MAX_EXAMPLES = 64
DEFAULT_EVAL_CLIPS = 64
CLIP_FIGURE = dict(figsize=(4.8, 3.0), dpi=80)  # 384 x 240 pixels
CLIP_FILE = re.compile(r"(real|recon|sample|piece)_\d+\.(wav|png)")


# ---------------------------------------------------------------- small helpers


def _e(text):
    return html.escape(str(text), quote=True)


def _href(folder, name):
    return _e(f"{quote(folder)}/{quote(name)}")


def _atomic(path, write):
    """Call `write(tmp)` on a temporary file beside `path`, then move it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_text(path, text):
    return _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_wav16(path, audio, rate):
    """A 16-bit PCM WAV: half the size of float32 and played by every browser."""
    from scipy.io import wavfile

    x = np.clip(np.nan_to_num(np.asarray(audio, np.float32).reshape(-1)), -1.0, 1.0)
    pcm = np.round(x * 32767).astype(np.int16)
    return _atomic(path, lambda tmp: wavfile.write(tmp, int(rate), pcm))


def _plot_clip(path, audio, rate):
    from kvae.evaluation.plots import plot_audio

    return _atomic(path, lambda tmp: plot_audio(audio, rate, tmp, **CLIP_FIGURE))


def _png_size(path):
    """(width, height) from a PNG's header, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


def _number(value, fmt="{:.4g}"):
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def _slug(name, taken):
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "run"
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}-{k}", k + 1
    taken.add(slug)
    return slug


def _read_json(path):
    """(dict, None) or (None, why) for an optional JSON file."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path}: cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
    if not isinstance(value, dict):
        return None, f"{path}: not a JSON object"
    return value, None


def _index(path):
    digits = re.findall(r"\d+", path.stem)
    return (int(digits[-1]) if digits else -1, path.name)


# ---------------------------------------------------------------- reading a run folder


def read_run(run):
    """Check a run folder and read what the gallery shows from it.

    Returns:
        A dict: `path`, `config` (dict or None), `history` (dict or None),
        `eval` (dict or None), `notes` (problems worth showing), `model_file`,
        `samples` and `pieces` (lists of WAV paths).

    Raises:
        KvaeError: the folder is missing, is a file, or holds neither
            `config.json` nor `model.keras`, or its config.json is unreadable.
    """
    path = Path(run)
    if not path.exists():
        raise KvaeError(f"{path}: no such run folder")
    if not path.is_dir():
        raise KvaeError(f"{path}: not a folder; give a run folder such as runs/quickstart-<time>")
    if not (path / "config.json").is_file() and not (path / "model.keras").is_file():
        raise KvaeError(f"{path}: not a run folder (no config.json or model.keras)")
    config, why = _read_json(path / "config.json")
    if why:
        raise KvaeError(why)
    notes = []
    evaluation, why = _read_json(path / "eval.json")
    if why:
        notes.append(why)
    elif evaluation is not None and not isinstance(evaluation.get("realism"), dict):
        notes.append(f"{path / 'eval.json'}: not a kvae evaluate report (no realism rows)")
        evaluation = None
    history = None
    if (path / "history.csv").is_file():
        from kvae.evaluation.plots import read_history

        try:
            history = read_history(path / "history.csv") or None
        except (OSError, UnicodeDecodeError) as exc:
            notes.append(f"{path / 'history.csv'}: cannot be read ({exc})")
    samples = sorted((path / "samples").glob("*.wav"), key=_index) if (path / "samples").is_dir() else []
    pieces = sorted((path / "pieces").glob("*.wav"), key=_index) if (path / "pieces").is_dir() else []
    return {"path": path, "config": config, "history": history, "eval": evaluation, "notes": notes,
            "model_file": path / "model.keras" if (path / "model.keras").is_file() else None,
            "samples": samples, "pieces": pieces}


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


# ---------------------------------------------------------------- making the files


def _clip_data(config, model, n, seed, data, cache):
    """`n` held-out windows at the model's rate, normalised as in training (as `kvae evaluate` picks them)."""
    from kvae.data import normalize_window, prepare
    from kvae.evaluation.evaluate import windows

    cfg_data = (config or {}).get("data", {})
    root = data if data is not None else (cfg_data.get("path") or None)
    cache = cache if cache is not None else (cfg_data.get("cache") or None)
    corpus = prepare(root, rate=model.sample_rate, cache_dir=cache, select=cfg_data.get("select") or None)
    clips, split = windows(corpus, "test", model.window, n, random=False, seed=seed)
    return normalize_window(clips, cfg_data.get("normalize", "none")), split


def _load_model(info):
    from kvae.training import load

    return load(info["model_file"], compile=False)


def _clip(folder, slug, name, audio, rate, caption, alt):
    _write_wav16(folder / f"{name}.wav", audio, rate)
    _plot_clip(folder / f"{name}.png", audio, rate)
    return dict(name=name, wav=_href(slug, f"{name}.wav"), png=_href(slug, f"{name}.png"), caption=caption, alt=alt,
                   size=(int(CLIP_FIGURE["figsize"][0] * CLIP_FIGURE["dpi"]),
                         int(CLIP_FIGURE["figsize"][1] * CLIP_FIGURE["dpi"])),
                   seconds=len(np.reshape(audio, -1)) / rate)


def _figures(shown):
    return [fig for pair in shown["recon"] for fig in pair] + shown["samples"] + shown["pieces"]


def _make_run_files(info, out, n, seed, model, evaluate, n_clips, data, cache, say):
    """Write one run's files under `out/<slug>/`; return what the page shows of it."""
    from kvae.data import read_audio

    slug, folder, name = info["slug"], out / info["slug"], info["name"]
    folder.mkdir(parents=True, exist_ok=True)
    shown = {"loss": None, "recon": [], "recon_note": None, "samples": [], "samples_note": None,
             "pieces": [], "pieces_note": None, "eval": info["eval"], "eval_note": None, "model": None}

    # loss curves: the run's PNG, else drawn from history.csv
    curves = info["path"] / "loss_curves.png"
    if curves.is_file():
        _atomic(folder / "loss_curves.png", lambda tmp: shutil.copyfile(curves, tmp))
        shown["loss"] = (_href(slug, "loss_curves.png"), _png_size(folder / "loss_curves.png"))
    elif info["history"]:
        from kvae.evaluation.plots import plot_history

        try:
            _atomic(folder / "loss_curves.png", lambda tmp: plot_history(info["history"], tmp, title=name))
            shown["loss"] = (_href(slug, "loss_curves.png"), _png_size(folder / "loss_curves.png"))
        except (KeyError, IndexError, ValueError) as exc:
            info["notes"].append(f"history.csv: cannot be plotted ({exc})")

    # the model, if there is one
    why_no_model = None
    if model is None and info["model_file"] is not None and (n or evaluate):
        say(f"{info['path']}: loading the model")
        try:
            model = _load_model(info)
        except KvaeError as exc:
            why_no_model = str(exc)
    elif info["model_file"] is None and model is None:
        why_no_model = "no model.keras in the run folder (training has not finished)"
    if model is not None:
        shown["model"] = {"class": type(model).__name__, "sample_rate": model.sample_rate, "window": model.window,
                          "parameters": int(model.count_params())}

    # reconstructions of held-out windows
    if n == 0:
        shown["recon_note"] = "no clips asked for (-n 0)"
    elif model is None:
        shown["recon_note"] = f"no reconstructions: {why_no_model}"
    else:
        say(f"{info['path']}: reconstructing {n} held-out windows")
        try:
            real, split = _clip_data(info["config"], model, n, seed, data, cache)
        except KvaeError as exc:
            shown["recon_note"] = f"no reconstructions: the data could not be read ({exc})"
        else:
            recon = model.reconstruct(real)
            where = "test" if split == "test" else "training (the data has no test split)"
            shown["recon_split"] = where
            for i, (x, y) in enumerate(zip(real, recon)):
                shown["recon"].append((
                    _clip(folder, slug, f"real_{i}", x, model.sample_rate, f"real window {i + 1}",
                          f"Waveform and spectrogram of real {split} window {i + 1}, run {name}"),
                    _clip(folder, slug, f"recon_{i}", y, model.sample_rate, f"reconstruction {i + 1}",
                          f"Waveform and spectrogram of the reconstruction of window {i + 1}, run {name}"),
                ))

    # prior samples: the run's own, else drawn now
    if n == 0:
        shown["samples_note"] = "no clips asked for (-n 0)"
    elif info["samples"]:
        for i, wav in enumerate(info["samples"][:n]):
            try:
                audio, rate = read_audio(wav)
            except KvaeError as exc:
                info["notes"].append(f"{wav}: skipped ({exc})")
                continue
            shown["samples"].append(_clip(folder, slug, f"sample_{i}", audio, rate, f"sample {i + 1} ({wav.name})",
                                          f"Waveform and spectrogram of prior sample {wav.name}, run {name}"))
        shown["samples_note"] = f"from the run's samples/ folder ({len(info['samples'])} in all)"
    elif model is not None:
        say(f"{info['path']}: drawing {n} prior samples")
        for i, audio in enumerate(model.sample(n, seed=seed)):
            shown["samples"].append(_clip(folder, slug, f"sample_{i}", audio, model.sample_rate, f"sample {i + 1}",
                                          f"Waveform and spectrogram of prior sample {i + 1}, run {name}"))
        shown["samples_note"] = f"drawn now from the prior (seed {seed}): the run folder has no samples/"
    else:
        shown["samples_note"] = f"no samples: {why_no_model}"

    # long generated pieces (a run with a prior over latents writes pieces/*.wav)
    for i, wav in enumerate(info["pieces"]):
        try:
            audio, rate = read_audio(wav)
        except KvaeError as exc:
            info["notes"].append(f"{wav}: skipped ({exc})")
            continue
        shown["pieces"].append(_clip(folder, slug, f"piece_{i}", audio, rate, f"{wav.stem}",
                                     f"Waveform and spectrogram of generated piece {wav.name}, run {name}"))
    if not info["pieces"]:
        shown["pieces_note"] = "none: a run with a prior over latents writes pieces/*.wav, played here"
    written = {name for fig in _figures(shown) for name in (fig["name"] + ".wav", fig["name"] + ".png")}
    for old in folder.iterdir():  # clips of an earlier gallery with more of them
        if CLIP_FILE.fullmatch(old.name) and old.name not in written:
            old.unlink()

    # evaluation: eval.json, else a small one on request
    if shown["eval"] is None and evaluate:
        if model is None:
            shown["eval_note"] = f"not evaluated: {why_no_model}"
        else:
            from kvae.evaluation import evaluate as evaluation
            from kvae.evaluation.report import write_json

            say(f"{info['path']}: evaluating with {n_clips} clips per set")
            cfg_data = (info["config"] or {}).get("data", {})
            root = data if data is not None else (cfg_data.get("path") or None)
            result = evaluation.evaluate(model, data=root, cache=cache if cache is not None else
                                         (cfg_data.get("cache") or None), n_clips=n_clips, seed=seed)
            write_json(folder / "eval.json", result)
            shown["eval"] = result
            shown["eval_source"] = f"evaluated by this gallery ({n_clips} clips per set): {slug}/eval.json"
    elif shown["eval"] is not None:
        shown["eval_source"] = "the run's eval.json"
    return shown


# ---------------------------------------------------------------- the page


CSS = """
:root { color-scheme: light; --muted: #4a4a4a; --line: #d0d0d0; --ref: #f3f3f3; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1rem 1.25rem; color: #111;
  background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 0; overflow-wrap: anywhere; }
h3 { font-size: 1rem; margin: .9rem 0 .35rem; border-bottom: 1px solid var(--line); }
.lead, .note, .path { color: var(--muted); }
.note { font-size: .9rem; }
nav ul { display: flex; flex-wrap: wrap; gap: .2rem 1.5rem; padding: 0; margin: .5rem 0 1rem; list-style: none; }
.path { font-size: .85rem; overflow-wrap: anywhere; margin: 0; }
.runs { display: grid; grid-auto-flow: column; grid-auto-columns: minmax(25rem, 1fr);
  grid-template-rows: repeat(7, auto); column-gap: 1.5rem; }
.run { grid-row: span 7; display: grid; grid-template-rows: subgrid; border-top: 3px solid #333;
  padding-top: .5rem; min-width: 0; }
.run > * { min-width: 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .75rem; margin: 0; font-size: .9rem; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
details { font-size: .85rem; margin-top: .35rem; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: .8rem; margin: .25rem 0 .5rem; }
caption { text-align: left; font-size: .85rem; color: var(--muted); padding-bottom: .2rem; }
th, td { padding: .15rem .4rem; border-bottom: 1px solid var(--line); vertical-align: top; }
td { text-align: right; white-space: nowrap; }
.verdicts { font-size: .85rem; padding-left: 1.1rem; margin: .25rem 0; }
.verdicts li.ref { font-style: italic; }
th[scope=row] { text-align: left; font-weight: 600; white-space: nowrap; }
tr.ref { background: var(--ref); }
tr.ref th { font-weight: normal; font-style: italic; }
.pairs, .pair, .clips { display: grid; gap: .6rem; margin-bottom: .5rem; }
.pairs { grid-template-columns: repeat(auto-fill, minmax(min(100%, 24rem), 1fr)); column-gap: 1.5rem; }
.pair { grid-template-columns: 1fr 1fr; margin: 0; }
.clips { grid-template-columns: repeat(auto-fill, minmax(min(100%, 14rem), 1fr)); }
figure { margin: 0; }
figcaption { font-size: .85rem; }
img { display: block; width: 100%; max-width: 384px; height: auto; background: #eee; }
img.wide { max-width: 100%; }
audio { display: block; width: 100%; max-width: 384px; height: 2.2rem; }
a:focus-visible, audio:focus-visible, summary:focus-visible, .table-wrap:focus-visible { outline: 3px solid #1a5fb4; outline-offset: 2px; }
#selftest-result:empty { display: none; }
"""

SELFTEST = r"""
(function () {
  if (location.hash !== '#selftest') return;
  var out = document.getElementById('selftest-result');
  var errors = [];
  window.addEventListener('error', function (e) {
    errors.push(e.message || ('failed to load ' + ((e.target && (e.target.currentSrc || e.target.src)) || '?')));
  }, true);
  function settle(el, check, events) {
    return new Promise(function (resolve) {
      var finished = false;
      function done(timeout) {
        if (finished) return;
        finished = true;
        var r = check(el);
        if (timeout) r.timeout = true;
        resolve(r);
      }
      events.forEach(function (name) { el.addEventListener(name, function () { done(false); }); });
      setTimeout(function () { done(true); }, 8000);
    });
  }
  var audios = Array.prototype.map.call(document.querySelectorAll('audio'), function (a) {
    var p = settle(a, function (el) {
      return {src: el.currentSrc || el.src, readyState: el.readyState, duration: el.duration,
              error: el.error ? el.error.code : null,
              ok: el.readyState >= 1 && el.duration > 0 && !el.error};
    }, ['loadedmetadata', 'error']);
    a.preload = 'metadata';
    a.load();
    return p;
  });
  var images = Array.prototype.map.call(document.querySelectorAll('img'), function (img) {
    var check = function (el) {
      return {src: el.currentSrc || el.src, width: el.naturalWidth, alt: el.alt,
              ok: el.complete && el.naturalWidth > 0};
    };
    img.loading = 'eager';
    if (img.complete && img.naturalWidth > 0) return Promise.resolve(check(img));
    return settle(img, check, ['load', 'error']);
  });
  Promise.all([Promise.all(audios), Promise.all(images)]).then(function (r) {
    var ok = r[0].every(function (x) { return x.ok; }) && r[1].every(function (x) { return x.ok; });
    out.textContent = JSON.stringify({done: true, ok: ok && errors.length === 0, audio: r[0], images: r[1],
                                      errors: errors});
  });
})();
"""


def _figure_html(fig, tag="figure"):
    w, h = fig["size"]
    return (f'<{tag}><img src="{fig["png"]}" width="{w}" height="{h}" loading="lazy" alt="{_e(fig["alt"])}">'
            f'<figcaption>{_e(fig["caption"])} ({fig["seconds"]:.2f} s)</figcaption>'
            f'<audio controls preload="metadata" src="{fig["wav"]}" aria-label="Play {_e(fig["caption"])}">'
            f'<a href="{fig["wav"]}">{_e(fig["caption"])} (WAV)</a></audio></{tag}>')


def _config_html(info, shown):
    config, history = info["config"] or {}, info["history"]
    items = []
    model_cfg = config.get("model", {})
    if model_cfg:
        args = ", ".join(f"{k}={v}" for k, v in model_cfg.items() if k != "type")
        items.append(("model", f"{model_cfg.get('type', '?')}" + (f" ({args})" if args else "")))
    if shown["model"]:
        m = shown["model"]
        items.append(("network", f"{m['class']}, {m['parameters']:,} parameters, {m['window']} samples at "
                                 f"{m['sample_rate']} Hz"))
    data = config.get("data", {})
    if data:
        items.append(("data", f"{data.get('path') or 'embedded corpus'} at {data.get('rate')} Hz, "
                              f"{data.get('window_seconds')} s windows, batch {data.get('batch_size')}"))
    train = config.get("train", {})
    if train:
        items.append(("training", f"epochs {train.get('epochs')}, learning rate {train.get('learning_rate')}, "
                                  f"KL {train.get('kl_schedule')}, seed {train.get('seed')}"))
    if history:
        epochs = len(next(iter(history.values())))
        last = ", ".join(f"{k} {_number(history[k][-1])}" for k in ("loss", "val_loss", "kl", "val_kl")
                         if k in history)
        items.append(("trained", f"{epochs} epoch{'s' if epochs != 1 else ''}; last: {last}"))
    if not config:
        items.append(("config", "no config.json in the run folder"))
    out = ["<dl>"] + [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items] + ["</dl>"]
    if config:
        out.append(f"<details><summary>config.json</summary><pre>{_e(json.dumps(config, indent=2))}</pre></details>")
    return "".join(out)


def _eval_html(info, shown):
    from kvae.evaluation.report import REALISM_KEYS, RECONSTRUCTION_KEYS

    result = shown["eval"]
    run = info["path"]
    if result is None:
        note = shown["eval_note"] or (f"no evaluation yet: run kvae evaluate {run} --out {run / 'eval.json'} "
                                      "(or kvae gallery --evaluate)")
        return f'<p class="note">{_e(note)}</p>'
    name = info["name"]
    s, d = result.get("settings", {}), result.get("data", {})
    out = [f'<p class="note">{_e(shown.get("eval_source", ""))}: every set of {_e(s.get("n_clips", "?"))} clips '
           f'against {_e(d.get("reference_windows", "?"))} random training windows (seed {_e(s.get("seed", "?"))}). '
           "Realism: C2ST 0.5 = indistinguishable from the training data, 1.0 = always told apart; lower is "
           "better for every column but temporal std, where real music is the target. Reference rows (ref:, in "
           "italics) show what real music and failures score.</p>"]

    def table(rows, keys, caption):
        head = "".join(f'<th scope="col">{_e(title)}</th>' for _, title, _ in keys)
        body = []
        for row_name, row in rows.items():
            if not isinstance(row, dict):
                continue
            cells = []
            for key, _, fmt in keys:
                if key == "c2st":
                    cells.append(f"{_number(row.get('c2st'), '{:.3f}')} [{_number(row.get('c2st_low'), '{:.2f}')}-"
                                 f"{_number(row.get('c2st_high'), '{:.2f}')}]")
                else:
                    cells.append(_number(row.get(key), fmt))
            tds = "".join(f"<td>{_e(c)}</td>" for c in cells)
            cls = ' class="ref"' if str(row_name).startswith("ref: ") else ""
            body.append(f'<tr{cls}><th scope="row">{_e(row_name)}</th>{tds}</tr>')
        return (f'<div class="table-wrap" role="region" tabindex="0" aria-label="{_e(caption)}"><table>'
                f'<caption>{_e(caption)}</caption><thead><tr><th scope="col">set</th>{head}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody></table></div>')

    realism = result.get("realism", {})
    verdicts = [(k, row["verdict"]) for k, row in realism.items() if isinstance(row, dict) and row.get("verdict")]
    if verdicts:
        ref = ' class="ref"'
        out.append(f'<ul class="verdicts" aria-label="Verdicts of {_e(name)}">'
                   + "".join(f'<li{ref if k.startswith("ref: ") else ""}><strong>{_e(k)}</strong>: {_e(v)}</li>'
                             for k, v in verdicts) + "</ul>")
    out.append(table(realism, REALISM_KEYS, f"Realism of {name}"))
    if result.get("reconstruction"):
        out.append(table(result["reconstruction"], RECONSTRUCTION_KEYS, f"Reconstruction by {name}"))
        out.append('<p class="note">Reconstruction: held-out windows against their own inputs; lower is better '
                   'but for SI-SDR.</p>')
    return "".join(out)


def _run_html(info, shown, number):
    name, slug = info["name"], info["slug"]
    hid = f"run-{number}"
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in info["notes"])
    parts = [f'<header><h2 id="{hid}">{_e(name)}</h2><p class="path">{_e(info["path"])}</p>{notes}</header>']
    parts.append(f'<section aria-labelledby="{hid}-config"><h3 id="{hid}-config">Config</h3>'
                 f'{_config_html(info, shown)}</section>')
    if shown["loss"]:
        src, size = shown["loss"]
        wh = f' width="{size[0]}" height="{size[1]}"' if size else ""
        body = (f'<a href="{src}"><img class="wide" src="{src}"{wh} loading="lazy" alt="Loss curves of {_e(name)}: '
                f'total, reconstruction and KL against epoch, training and validation (opens the full-size '
                f'image)"></a>')
    else:
        body = '<p class="note">no loss curves (no loss_curves.png or history.csv)</p>'
    parts.append(f'<section aria-labelledby="{hid}-loss"><h3 id="{hid}-loss">Loss curves</h3>{body}</section>')
    parts.append(f'<section aria-labelledby="{hid}-eval"><h3 id="{hid}-eval">Evaluation</h3>'
                 f'{_eval_html(info, shown)}</section>')
    if shown["recon"]:
        where = shown.get("recon_split", "test")
        body = (f'<p class="note">evenly spaced windows of the {_e(where)} split, each beside its reconstruction</p>'
                '<div class="pairs">'
                + "".join(f'<div class="pair">{_figure_html(a)}{_figure_html(b)}</div>' for a, b in shown["recon"])
                + "</div>")
    else:
        body = f'<p class="note">{_e(shown["recon_note"])}</p>'
    parts.append(f'<section aria-labelledby="{hid}-recon"><h3 id="{hid}-recon">Real windows and reconstructions'
                 f'</h3>{body}</section>')
    body = (f'<p class="note">{_e(shown["samples_note"])}</p>' if shown["samples_note"] else "")
    if shown["samples"]:
        body += '<div class="clips">' + "".join(_figure_html(f) for f in shown["samples"]) + "</div>"
    parts.append(f'<section aria-labelledby="{hid}-samples"><h3 id="{hid}-samples">Prior samples</h3>{body}</section>')
    if shown["pieces"]:
        body = '<div class="clips">' + "".join(_figure_html(f) for f in shown["pieces"]) + "</div>"
    else:
        body = f'<p class="note">{_e(shown["pieces_note"])}</p>'
    parts.append(f'<section aria-labelledby="{hid}-pieces"><h3 id="{hid}-pieces">Generated pieces</h3>{body}</section>')
    return f'<article class="run" aria-labelledby="{hid}" data-folder="{_e(slug)}">{"".join(parts)}</article>'


def render_page(infos, shown, title="kvae listening gallery"):
    """The whole page as a string: one column per run."""
    count = len(infos)
    nav = "".join(f'<li><a href="#run-{i + 1}">{_e(info["name"])}</a> <span class="path">{_e(info["path"])}</span></li>'
                  for i, info in enumerate(infos))
    columns = "".join(_run_html(info, s, i + 1) for i, (info, s) in enumerate(zip(infos, shown)))
    made = time.strftime("%Y-%m-%d %H:%M")
    lead = "One run" if count == 1 else f"{count} runs side by side"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{_e(title)}</h1><p class="lead">'
        f"{lead}, made {_e(made)}. Every player is the browser's own (no script needed); each image is the "
        "clip's waveform above its spectrogram.</p>"
        f'<nav aria-label="Runs"><ul>{nav}</ul></nav></header>'
        f'<main class="runs">{columns}</main>'
        '<pre id="selftest-result" aria-live="polite"></pre>'
        f"<script>{SELFTEST}</script></body></html>\n"
    )


# ---------------------------------------------------------------- entry points


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
        data, cache: str, Path or None. Dataset root and cache folder for
            the reconstructions; default: each run's config.
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
    n = int(n)
    if not 0 <= n <= MAX_EXAMPLES:
        raise KvaeError(f"-n: must be between 0 and {MAX_EXAMPLES}, got {n}")
    if out is None:
        if len(runs) > 1:
            raise KvaeError("--out: needed for several runs (one run defaults to RUN/gallery)")
        out = runs[0] / "gallery"
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
        out.mkdir(parents=True, exist_ok=True)
        shown = [_make_run_files(info, out, n, seed, models.get(info["path"].resolve()), evaluate, n_clips, data,
                                 cache, say) for info in infos]
        return _write_text(out / "index.html", render_page(infos, shown))
    except OSError as exc:
        raise KvaeError(f"{out}: cannot write the gallery ({exc.strerror or exc})") from None


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
        return write_gallery([run_dir], Path(run_dir) / "gallery", n=FIT_EXAMPLES, seed=config["train"]["seed"],
                             models={run_dir: model})
    except KvaeError as exc:
        print(f"kvae: warning: gallery not written: {exc}", file=sys.stderr)
        return None


def main(args):
    """`kvae gallery RUN [RUN ...]`: write the page and print where it is."""
    progress = (lambda m: print(f"  {m}", file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    page = write_gallery(args.runs, out=args.out, n=args.n, evaluate=args.evaluate, n_clips=args.n_clips,
                         seed=args.seed, data=args.data, cache=args.cache, progress=progress)
    print(f"wrote {page}")
    print(f"open it in a browser: xdg-open {page}  (or {page.resolve().as_uri()})")
    return 0


__all__ = ["DEFAULT_EXAMPLES", "FIT_EXAMPLES", "fit_gallery", "main", "read_run", "render_page", "write_gallery"]
