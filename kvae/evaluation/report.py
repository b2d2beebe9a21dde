"""The evaluation report in words, tables and JSON: verdicts, aligned text, atomic strict JSON."""

import json
import math
from pathlib import Path

from kvae.errors import KvaeError

# Stable JSON keys of a realism row, with the column title and format of the printed table.
REALISM_KEYS = (
    ("c2st", "C2ST acc [95% CI]", None),
    ("kid", "KID", "{:.3f}"),
    ("frechet_clip", "Fréchet clip", "{:.1f}"),
    ("frechet_logmel", "Fréchet log-mel", "{:.1f}"),
    ("temporal_std", "temporal std dB", "{:.2f}"),
    ("silence", "silence", "{:.3f}"),
    ("flatness", "flatness", "{:.3f}"),
    ("frechet_notes", "Fréchet notes", "{:.1f}"),
    ("kid_notes", "KID notes", "{:.3f}"),
    ("frechet_music", "Fréchet musicnn", "{:.1f}"),
    ("kid_music", "KID musicnn", "{:.3f}"),
)
RECONSTRUCTION_KEYS = (
    ("paired_c2st", "paired C2ST [95% CI]", None),
    ("rate_bps", "kbit/s", "kbit"),
    ("mrstft", "MR-STFT dist", "{:.3f}"),
    ("lsd_db", "LSD dB", "{:.2f}"),
    ("si_sdr_db", "SI-SDR dB", "{:.2f}"),
    ("visqol", "ViSQOL MOS", "{:.2f}"),
)
HARD_TO_TELL = 0.6  # a row whose C2ST interval reaches below this is called hard to tell from the data
LADDER = "ladder: "


def _label(name):
    return name[len("ref: "):] if name.startswith("ref: ") else name


def verdicts(rows):
    """One plain-words line per realism row, from its C2ST accuracy and the reference rows'.

    A row whose 95 % interval reaches below 0.6 is "hard to tell from the
    training data"; any other is "distinguishable ... N % of the time, like"
    the reference row whose accuracy is nearest.
    """
    refs = {name: row["c2st"] for name, row in rows.items() if name.startswith("ref: ")}
    out = {}
    for name, row in rows.items():
        pct = round(100 * row["c2st"])
        if row["c2st_low"] < HARD_TO_TELL:
            out[name] = f"hard to tell from the training data: told apart {pct} % of the time (50 % is chance)"
            continue
        others = {k: v for k, v in refs.items() if k != name}
        if not others:
            out[name] = f"distinguishable from the training data {pct} % of the time"
            continue
        like = min(others, key=lambda k: (abs(others[k] - row["c2st"]), k))
        out[name] = (f"distinguishable from the training data {pct} % of the time, like "
                     f"{_label(like)} ({round(100 * others[like])} %)")
    return out


def reconstruction_verdict(rows, name="reconstructions"):
    """One plain-words line for a row's paired C2ST, naming the nearest codec-ladder row.

    Ladder rows that also fall inside the row's 95 % interval are listed
    after it: the test cannot rank the model among them.

    Args:
        rows: the reconstruction table: the row `name` (with `paired_c2st`,
            `paired_c2st_low` and, where known, `rate_bps`) and the
            `ladder: ` rows.
        name: str. The row to describe. Defaults to "reconstructions".
    """
    row = rows[name]
    pct = round(100 * row["paired_c2st"])
    rate = row.get("rate_bps")
    at = "" if rate is None else f" at {kbit(rate)} kbit/s"
    if row["paired_c2st_low"] < HARD_TO_TELL:
        return f"hard to tell from their inputs{at}: told apart {pct} % of the time (50 % is chance)"
    ladder = {k[len(LADDER):]: v["paired_c2st"] for k, v in rows.items()
              if k.startswith(LADDER) and v.get("paired_c2st") is not None}
    if not ladder:
        return f"told from their inputs {pct} % of the time{at}"
    like = min(ladder, key=lambda k: (abs(ladder[k] - row["paired_c2st"]), k))
    text = f"told from their inputs {pct} % of the time{at}: as detectable as {like} ({round(100 * ladder[like])} %)"
    high = row.get("paired_c2st_high", row["paired_c2st"])
    alike = [k for k in sorted(ladder, key=lambda k: (-ladder[k], k))
             if k != like and row["paired_c2st_low"] <= ladder[k] <= high]
    if alike:  # the ladder cannot rank the model among these
        text += "; within its 95 % interval also " + ", ".join(f"{k} ({round(100 * ladder[k])} %)" for k in alike)
    return text


def kbit(bps):
    """Bits per second as kbit/s text: 3 significant digits below 10, else 1 decimal."""
    kbps = bps / 1000.0
    return f"{kbps:.3g}" if abs(kbps) < 10 else f"{kbps:.1f}"


def _cell(value, fmt):
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if fmt == "kbit":
        return kbit(value)
    return fmt.format(value)


def _interval(values, key):
    """`0.912 [0.89-0.94]` of a C2ST-like key with its `_low` and `_high`, or `-`."""
    if values.get(key) is None:
        return "-"
    return f"{values[key]:.3f} [{values[key + '_low']:.2f}-{values[key + '_high']:.2f}]"


def format_table(rows, keys, first_title):
    """Plain-text table lines of `rows` (name -> metrics) with the `(key, title, format)` columns `keys`."""
    header = [first_title, *[title for _, title, _ in keys]]
    lines = []
    for name, values in rows.items():
        cells = [name]
        for key, _, fmt in keys:
            if key.endswith("c2st"):  # accuracy with its 95 % interval
                cells.append(_interval(values, key))
            else:
                cells.append(_cell(values.get(key), fmt))
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]

    def fmt_row(row):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return [fmt_row(header), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in lines]


def format_report(result):
    """The whole report as text: what was compared, the realism table with verdicts, the reconstruction table."""
    m, s, d = result["model"], result["settings"], result["data"]
    out = [
        f"{m['class']} at {m['sample_rate']} Hz, {m['window']}-sample windows, {m['parameters']:,} parameters",
        f"every row: {s['n_clips']} clips vs {d['reference_windows']} random training windows "
        f"({s['features']} clip features; C2ST {s['c2st']}; KID {s['kid']}; seed {s['seed']})",
        f"held-out windows: {d['held_out_windows']} from the {d['held_out_split']} split"
        + ("" if d["held_out_split"] == "test" else " (no test split: not held out)"),
        "",
        "Realism (C2ST 0.5 = indistinguishable from the training data, 1.0 = always told apart; lower is better "
        "for every column but temporal std, where real music is the target)",
    ]
    out += format_table(result["realism"], REALISM_KEYS, "set")
    out += [""] + [f"{name}: {row['verdict']}" for name, row in result["realism"].items() if "verdict" in row]
    if not str(s.get("note_model", "")).startswith("basic-pitch"):
        out += [f"note model columns: {s.get('note_model', 'off')}"]
    if not str(s.get("music_net", "")).startswith("musicnn"):
        out += [f"music network columns: {s.get('music_net', 'off')}"]
    rows = result["reconstruction"]
    out += ["", "Reconstruction of held-out windows (paired C2ST: each output against its own input, 0.5 = "
                "indistinguishable; the ladder: the same windows through known codecs and degradations)"]
    out += format_table(rows, RECONSTRUCTION_KEYS, "")
    out += [""] + [f"{name}: {row['note']}" for name, row in rows.items() if row.get("note")]
    if not str(s.get("visqol", "")).startswith("visqol-python"):
        out += [f"ViSQOL column: {s.get('visqol', 'off')}"]
    if "verdict" in rows.get("reconstructions", {}):
        out += [f"reconstructions: {rows['reconstructions']['verdict']}"]
    if result.get("rate_bps") is not None:
        out += [f"information rate: {kbit(result['rate_bps'])} kbit/s (mean KL per held-out window in bits, "
                "per second of audio)"]
    return "\n".join(out)


def _strict(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(path, result, refuse=(), overwrite=True):
    """Write `result` as strict JSON (inf and NaN become null) atomically; never over one of `refuse`.

    Args:
        path: str or Path. The JSON file.
        result: dict. The report.
        refuse: paths the file must not replace (the command's inputs).
        overwrite: bool. Replace an existing file (never an input, a model
            or a run's own file). Defaults to True.

    Raises:
        KvaeError: `path` is a folder, one of `refuse`, a model or a run's
            file, or exists and `overwrite` is false; it cannot be written
            (a full disk: one line).
    """
    from kvae.paths import save_error, write_text
    from kvae.runs import check_output_file
    from kvae.runs.folder import EVALUATION

    check_output_file(path, refuse, example=EVALUATION, overwrite=overwrite)
    try:
        return write_text(path, json.dumps(_strict(result), indent=2, allow_nan=False) + "\n")
    except OSError as exc:
        raise save_error(exc, path, "writing the report", then="run the command again") from None
