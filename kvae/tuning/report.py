"""What a search reports: the trials table (rows, `trials.csv`, the printed table) and `trials.png`."""

import csv
import math
from pathlib import Path

from kvae.tuning import _keras_tuner

TABLE_COLUMNS = ("trial_id", "status", "hidden_layers", "learning_rate", "hidden_units", "latent_dim",
                 "epochs", "val_loss", "seconds", "tuner_id")


def last_line(message):
    """The last non-empty line of a trial's message (a traceback's exception line), shortened."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def trial_rows(tuner, base_config):
    """The trials table: one dict per trial, in start order, with `TABLE_COLUMNS` keys.

    Args:
        tuner: keras_tuner.Tuner. A tuner of the search (not a distributed
            worker's: it has no oracle of its own).
        base_config: dict. The resolved kvae config the search started from;
            it gives the values a trial does not search.

    Returns:
        A list of dicts; `val_loss` is None for a trial that did not complete.
    """
    model, train = base_config["model"], base_config["train"]
    rows = []
    for trial in _keras_tuner.trials(tuner.oracle):
        values = trial.hyperparameters.values
        record = _keras_tuner.trial_record(tuner, trial.trial_id)
        score = trial.score if trial.status == "COMPLETED" else None
        seconds = _keras_tuner.trial_metric(trial, "seconds")
        rows.append({
            "trial_id": trial.trial_id,
            "status": trial.status,
            "hidden_layers": int(values.get("hidden_layers", model.get("hidden_layers", 2))),
            "learning_rate": float(values.get("learning_rate", train["learning_rate"])),
            "hidden_units": int(values.get("hidden_units", model.get("hidden_units", 512))),
            "latent_dim": int(values.get("latent_dim", model.get("latent_dim", 64))),
            "epochs": int(values.get("tuner/epochs", train["epochs"])),
            "val_loss": float(score) if score is not None and math.isfinite(score) else None,
            "seconds": record.get("seconds", seconds),  # the whole trial; the fit alone across machines
            "tuner_id": record.get("tuner_id", ""),
        })
    return rows


def _fmt(key, value):
    if value is None:
        return ""
    if key == "learning_rate":
        return f"{value:.3g}"
    if key == "val_loss":
        return f"{value:.6g}"
    if key == "seconds":
        return f"{value:.1f}"
    return str(value)


def write_table(rows, path):
    """Write the trials table as CSV; return the path."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(k, row[k]) for k in TABLE_COLUMNS})
    return Path(path)


def format_table(rows, best_trial_id=None):
    """The trials table as aligned text lines (the best trial marked with `*`)."""
    headers = ["trial", "status", "layers", "lr", "units", "latent", "epochs", "val_loss", "seconds", "tuner"]
    body = [[_fmt(k, row[k]) for k in TABLE_COLUMNS] for row in rows]
    for line, row in zip(body, rows):
        if row["trial_id"] == best_trial_id:
            line[0] += " *"
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return lines


def plot_trials(rows, path, title=None):
    """Plot val_loss against depth and against learning rate (log scale); return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["val_loss"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    best = min(done, key=lambda r: r["val_loss"]) if done else None
    for ax, key, label in ((axes[0], "hidden_layers", "hidden layers (encoder = decoder depth)"),
                           (axes[1], "learning_rate", "learning rate")):
        xs = [r[key] for r in done]
        ys = [r["val_loss"] for r in done]
        ax.scatter(xs, ys, s=22, alpha=0.8, label="trial")
        if best is not None:
            ax.scatter([best[key]], [best["val_loss"]], marker="*", s=160, color="C3", label="best")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        if key == "learning_rate":
            ax.set_xscale("log")
        else:
            ax.set_xticks(sorted(set(xs)) if len(set(xs)) <= 15 else ax.get_xticks())
    axes[0].set_ylabel("val_loss (validation negative ELBO)")
    if best is not None:
        axes[1].legend(fontsize=8)
    if not done:
        for ax in axes:
            ax.text(0.5, 0.5, "no completed trial", ha="center", va="center", transform=ax.transAxes)
    n_failed = sum(r["status"] != "COMPLETED" for r in rows)
    fig.suptitle((title or "search") + f": {len(done)} trials" + (f", {n_failed} not completed" if n_failed else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
