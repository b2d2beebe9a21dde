"""The gallery's files: reading a run folder, writing clips (16-bit WAV + PNG) atomically, one run's column.

`make_run_files` writes one run's folder beside the page and returns what the
page shows of it (`kvae.evaluation.gallery.page` renders that).
"""

import json
import re
import shutil
import struct
from pathlib import Path
from urllib.parse import quote

import numpy as np

from kvae.errors import KvaeError
from kvae.paths import atomic_path
from kvae.runs import RunFolder, read_history
from kvae.runs.folder import CURVES, HISTORY, MODEL

CLIP_FIGURE = dict(figsize=(4.8, 3.0), dpi=80)  # 384 x 240 pixels
CLIP_FILE = re.compile(r"(real|recon|sample|piece)_\d+\.(wav|png)")


# ---------------------------------------------------------------- small helpers


def _href(folder, name):
    return f"{quote(folder)}/{quote(name)}"


def _atomic(path, write):
    """Call `write(tmp)` on a temporary file beside `path` (`kvae.paths.atomic_path`), then move it over `path`."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path, text):
    return _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_wav16(path, audio, rate):
    """A 16-bit PCM WAV: half the size of float32 and played by every browser."""
    from kvae.data import write_wav

    return write_wav(path, audio, rate, bits=16)


def _plot_clip(path, audio, rate):
    from kvae.evaluation.plots import plot_audio

    return _atomic(path, lambda tmp: plot_audio(audio, rate, tmp, **CLIP_FIGURE))


def png_size(path):
    """(width, height) from a PNG's header, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


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
    folder = RunFolder(path)
    if not path.exists():
        raise KvaeError(f"{path}: no such run folder")
    if not path.is_dir():
        raise KvaeError(f"{path}: not a folder; give a run folder such as runs/quickstart-<time>")
    if not folder.config.is_file() and not folder.model.is_file():
        raise KvaeError(f"{path}: not a run folder (no {folder.config.name} or {folder.model.name})")
    config, why = _read_json(folder.config)
    if why:
        raise KvaeError(why)
    notes = []
    evaluation, why = _read_json(folder.evaluation)
    if why:
        notes.append(why)
    elif evaluation is not None and not isinstance(evaluation.get("realism"), dict):
        notes.append(f"{folder.evaluation}: not a kvae evaluate report (no realism rows)")
        evaluation = None
    history = None
    if folder.history.is_file():
        try:
            history = read_history(folder.history) or None
        except (OSError, UnicodeDecodeError) as exc:
            notes.append(f"{folder.history}: cannot be read ({exc})")
    samples = sorted(folder.samples.glob("*.wav"), key=_index) if folder.samples.is_dir() else []
    pieces = sorted(folder.pieces.glob("*.wav"), key=_index) if folder.pieces.is_dir() else []
    return {"path": path, "config": config, "history": history, "eval": evaluation, "notes": notes,
            "model_file": folder.model if folder.model.is_file() else None,
            "samples": samples, "pieces": pieces}


# ---------------------------------------------------------------- making the files


def _clip_data(config, model, n, seed, data, cache):
    """`n` held-out windows at the model's rate, normalised as in training (as `kvae evaluate` picks them)."""
    from kvae.data import normalize_window, prepare
    from kvae.evaluation.evaluate import windows

    cfg_data = (config or {}).get("data", {})
    root = data if data is not None else (cfg_data.get("path") or None)
    cache = cache if cache is not None else (cfg_data.get("cache") or None)
    corpus = prepare(root, sample_rate=model.sample_rate, cache_dir=cache, select=cfg_data.get("select") or None)
    clips, split = windows(corpus, "test", model.window, n, random=False, seed=seed)
    return normalize_window(clips, cfg_data.get("normalize", "none")), split


def _load_model(info):
    from kvae.models.loading import load

    return load(info["model_file"], compile=False)


def _clip(owned, slug, name, audio, rate, caption, alt):
    _write_wav16(owned.file(f"{slug}/{name}.wav"), audio, rate)
    _plot_clip(owned.file(f"{slug}/{name}.png"), audio, rate)
    return dict(name=name, wav=_href(slug, f"{name}.wav"), png=_href(slug, f"{name}.png"), caption=caption, alt=alt,
                size=(int(CLIP_FIGURE["figsize"][0] * CLIP_FIGURE["dpi"]),
                      int(CLIP_FIGURE["figsize"][1] * CLIP_FIGURE["dpi"])),
                seconds=len(np.reshape(audio, -1)) / rate)


def _figures(shown):
    return [fig for pair in shown["recon"] for fig in pair] + shown["samples"] + shown["pieces"]


def make_run_files(info, owned, n, seed, model, evaluate, n_clips, data, cache, say):
    """Write one run's files under `<owned folder>/<slug>/`; return what the page shows of it.

    `owned` is the gallery's `kvae.paths.OwnedFolder`: only files it records
    as the gallery's are replaced or deleted.
    """
    slug, name = info["slug"], info["name"]
    folder = owned.path / slug
    folder.mkdir(parents=True, exist_ok=True)
    shown = {"loss": None, "recon": [], "recon_note": None, "samples": [], "samples_note": None,
             "pieces": [], "pieces_note": None, "eval": info["eval"], "eval_note": None, "model": None}

    # loss curves: the run's PNG, else drawn from history.csv
    curves = RunFolder(info["path"]).curves
    if curves.is_file():
        _atomic(owned.file(f"{slug}/{CURVES}"), lambda tmp: shutil.copyfile(curves, tmp))
        shown["loss"] = (_href(slug, CURVES), png_size(folder / CURVES))
    elif info["history"]:
        from kvae.evaluation.plots import plot_history

        try:
            _atomic(owned.file(f"{slug}/{CURVES}"), lambda tmp: plot_history(info["history"], tmp, title=name))
            shown["loss"] = (_href(slug, CURVES), png_size(folder / CURVES))
        except (KeyError, IndexError, ValueError) as exc:
            info["notes"].append(f"{HISTORY}: cannot be plotted ({exc})")

    # the model, if there is one
    why_no_model = None
    if model is None and info["model_file"] is not None and (n or evaluate):
        say(f"{info['path']}: loading the model")
        try:
            model = _load_model(info)
        except KvaeError as exc:
            why_no_model = str(exc)
    elif info["model_file"] is None and model is None:
        why_no_model = f"no {MODEL} in the run folder (training has not finished)"
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
                    _clip(owned, slug, f"real_{i}", x, model.sample_rate, f"real window {i + 1}",
                          f"Waveform and spectrogram of real {split} window {i + 1}, run {name}"),
                    _clip(owned, slug, f"recon_{i}", y, model.sample_rate, f"reconstruction {i + 1}",
                          f"Waveform and spectrogram of the reconstruction of window {i + 1}, run {name}"),
                ))

    # prior samples: the run's own, else drawn now
    if n == 0:
        shown["samples_note"] = "no clips asked for (-n 0)"
    elif info["samples"]:
        for i, wav, audio, rate in _read_wavs(info["samples"][:n], info["notes"]):
            shown["samples"].append(_clip(owned, slug, f"sample_{i}", audio, rate, f"sample {i + 1} ({wav.name})",
                                          f"Waveform and spectrogram of prior sample {wav.name}, run {name}"))
        shown["samples_note"] = f"from the run's samples/ folder ({len(info['samples'])} in all)"
    elif model is not None:
        say(f"{info['path']}: drawing {n} prior samples")
        for i, audio in enumerate(model.sample(n, seed=seed)):
            shown["samples"].append(_clip(owned, slug, f"sample_{i}", audio, model.sample_rate, f"sample {i + 1}",
                                          f"Waveform and spectrogram of prior sample {i + 1}, run {name}"))
        shown["samples_note"] = f"drawn now from the prior (seed {seed}): the run folder has no samples/"
    else:
        shown["samples_note"] = f"no samples: {why_no_model}"

    # long generated pieces (a run with a prior over latents writes pieces/*.wav)
    for i, wav, audio, rate in _read_wavs(info["pieces"], info["notes"]):
        shown["pieces"].append(_clip(owned, slug, f"piece_{i}", audio, rate, f"{wav.stem}",
                                     f"Waveform and spectrogram of generated piece {wav.name}, run {name}"))
    if not info["pieces"]:
        shown["pieces_note"] = "none: a run with a prior over latents writes pieces/*.wav, played here"
    written = {f"{slug}/{fig['name']}{ext}" for fig in _figures(shown) for ext in (".wav", ".png")}
    for old in owned.owned(slug):  # clips of an earlier gallery with more of them (its own files only)
        if CLIP_FILE.fullmatch(Path(old).name) and old not in written:
            owned.remove(old)

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
            write_json(owned.file(f"{slug}/eval.json"), result)
            shown["eval"] = result
            shown["eval_source"] = f"evaluated by this gallery ({n_clips} clips per set): {slug}/eval.json"
    elif shown["eval"] is not None:
        shown["eval_source"] = "the run's eval.json"
    return shown


def _read_wavs(wavs, notes):
    """Yield `(index, path, audio, rate)` for each readable WAV; an unreadable one is noted and skipped."""
    from kvae.data import read_audio

    for i, wav in enumerate(wavs):
        try:
            audio, rate = read_audio(wav)
        except KvaeError as exc:
            notes.append(f"{wav}: skipped ({exc})")
            continue
        yield i, wav, audio, rate
