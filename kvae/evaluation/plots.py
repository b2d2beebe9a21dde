"""Figures for run folders: loss curves and waveform-plus-spectrogram views (matplotlib, no screen)."""

from pathlib import Path

import numpy as np

from kvae.runs.history import read_history  # noqa: F401  (kvae 0.1's kvae.evaluation.plots.read_history)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, **kwargs):
    """Save a figure atomically (a temporary file renamed onto `path`) and close it; a failed write (a full
    disk, a read-only folder) is one line."""
    from kvae.paths import atomic_path, save_error

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, **kwargs)
    except OSError as exc:
        raise save_error(exc, path, "writing the plot", then="run the command again") from None
    finally:
        _pyplot().close(fig)


def plot_history(history, path, title=None, titles=None):
    """Plot total loss, reconstruction and KL against epoch, train and validation (and the STFT and adversarial terms when logged).

    Like the paper's Figures 1 and 2, one panel per term.

    Args:
        history: dict. `{metric: [value per epoch]}`, as Keras's
            `History.history` or `read_history` give.
        path: str or Path. PNG to write.
        title: str or None. Figure title.
        titles: dict or None. Panel titles by term, replacing the VAE's
            (e.g. `{"loss": "negative log-likelihood"}` for a latent prior).

    Returns:
        The path written.
    """
    plt = _pyplot()
    terms = [t for t in ("loss", "reconstruction", "kl", "stft", "adv_gen", "adv_disc", "feature_matching")
             if t in history]
    fig, axes = plt.subplots(1, len(terms), figsize=(4.2 * len(terms), 3.4), squeeze=False)
    n = len(history[terms[0]])
    epochs = history.get("epoch", list(range(n)))
    epochs = [int(e) + 1 for e in epochs]
    for ax, term in zip(axes[0], terms):
        ax.plot(epochs, history[term], marker="o", ms=3, label="train")
        if f"val_{term}" in history:
            ax.plot(epochs, history[f"val_{term}"], marker="o", ms=3, label="validation")
        ax.set_title({"loss": "total (negative ELBO)", "kl": "KL", **(titles or {})}.get(term, term))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path, dpi=110)
    return Path(path)


def plot_audio(samples, sample_rate, path, title=None, figsize=(8, 4.5), dpi=100):
    """Plot a clip's waveform above its spectrogram (dB).

    Args:
        samples: array-like. Mono audio, shape `(frames,)`.
        sample_rate: int. Its rate in Hz.
        path: str or Path. PNG to write.
        title: str or None. Figure title.
        figsize: (width, height) in inches. Defaults to (8, 4.5).
        dpi: int. Pixels per inch; the PNG is `figsize * dpi` pixels.

    Returns:
        The path written.
    """
    from kvae.dsp import fitting_fft_size, power_spectrogram

    plt = _pyplot()
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=figsize, sharex=True)
    t = np.arange(len(x)) / sample_rate
    top.plot(t, x, lw=0.5)
    top.set_ylabel("amplitude")
    top.set_ylim(-1.05, 1.05)
    n_fft = fitting_fft_size(len(x), largest=max(64, 2 ** round(np.log2(sample_rate * 0.04))))  # ~40 ms
    hop = max(n_fft // 4, 1)
    # Power spectral density like scipy.signal.spectrogram's scaling: |X|^2 / (rate * sum(w^2)).
    power = power_spectrogram(x[None, :], n_fft, hop)[0] * 2.0 / (sample_rate * 0.375 * n_fft)
    times = np.arange(power.shape[0]) * hop / sample_rate
    freqs = np.arange(power.shape[1]) * sample_rate / n_fft
    bottom.pcolormesh(times, freqs, 10 * np.log10(power.T + 1e-10), shading="auto", vmin=-100, vmax=-10,
                      cmap="magma")
    bottom.set_ylabel("Hz")
    bottom.set_xlabel("seconds")
    if title:
        top.set_title(title)
    fig.tight_layout()
    _save(fig, path, dpi=dpi)
    return Path(path)


def plot_rate_realism(results, path, labels=None, title=None):
    """Paired reconstruction C2ST against bitrate: each model a point, Opus a line, the other ladder rows marks.

    The codec-paper picture: how detectable a model's reconstructions are
    (0.5 = not at all, 1.0 = always) at the rate it spends (its KL, bits per
    second), beside classical codecs on the same windows. The ladder drawn is
    the first result's (every result is assumed to share its data); rows
    without a bitrate (noise, smearing, low-pass) are dotted horizontal lines.

    Args:
        results: list of dicts. `kvae evaluate` results (`evaluate` or an
            `eval.json`), each with `rate_bps` and a `reconstruction` table.
        path: str or Path. PNG to write.
        labels: list of str or None. One name per result.
        title: str or None. Figure title.

    Returns:
        The path written.

    Raises:
        KvaeError: where no result has a paired reconstruction C2ST.
    """
    from kvae.errors import KvaeError
    from kvae.evaluation.report import LADDER

    def paired(row):
        return row.get("paired_c2st") if isinstance(row, dict) else None

    points = [(label, r.get("rate_bps"), paired(r.get("reconstruction", {}).get("reconstructions")))
              for label, r in zip(labels or [f"model {i + 1}" for i in range(len(results))], results)]
    points = [(label, rate, c) for label, rate, c in points if rate is not None and c is not None]
    if not points:
        raise KvaeError("rate-realism plot: no result has a rate and a paired reconstruction C2ST "
                        "(evaluate again with this kvae)")
    ladder = {k[len(LADDER):]: v for k, v in results[0].get("reconstruction", {}).items()
              if k.startswith(LADDER) and paired(v) is not None}
    rated = [(v["rate_bps"], paired(v), k) for k, v in ladder.items() if v.get("rate_bps")]
    floor = 10.0  # bits per second: where a model spending (almost) nothing is drawn
    xs = [max(rate, floor) for _, rate, _ in points] + [r for r, _, _ in rated]
    lo, hi = min(xs) / 2, max(xs) * 2

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    opus = sorted((r, c) for r, c, k in rated if k.startswith("Opus"))
    if opus:
        ax.plot([r for r, _ in opus], [c for _, c in opus], "-o", color="tab:blue", label="Opus (8 kHz)")
        for r, c in opus:
            ax.annotate(f"{r / 1000:g} kbit/s", (r, c), textcoords="offset points", xytext=(4, -12), fontsize=8)
    for r, c, k in rated:
        if not k.startswith("Opus"):
            ax.plot([r], [c], "s", color="tab:green")
            ax.annotate(k, (r, c), textcoords="offset points", xytext=(-6, -12), fontsize=8, ha="right")
    unrated = sorted((paired(v), k) for k, v in ladder.items() if not v.get("rate_bps"))
    for i, (c, k) in enumerate(unrated):  # labels alternate sides, so close lines stay readable
        ax.axhline(c, color="0.6", ls=":", lw=1)
        ax.annotate(k, (lo if i % 2 == 0 else hi, c), textcoords="offset points", xytext=(3 if i % 2 == 0 else -3, 2),
                    fontsize=7, color="0.35", ha="left" if i % 2 == 0 else "right")
    colours = ["tab:red", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "k"]
    for i, (label, rate, c) in enumerate(points):
        drawn = "" if rate >= floor else f", drawn at {floor:g} bit/s"
        ax.plot([max(rate, floor)], [c], "*", ms=13, color=colours[i % len(colours)],
                label=f"{label} ({rate / 1000:.3g} kbit/s{drawn})")
    ax.axhline(0.5, color="k", lw=0.8)
    ax.annotate("chance: indistinguishable", (lo, 0.5), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0.45, 1.03)
    ax.set_xlabel("bitrate, bits per second (a model: its KL per second of audio)")
    ax.set_ylabel("paired C2ST of the reconstructions")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    ax.set_title(title or "How detectable the reconstructions are, at what rate")
    fig.tight_layout()
    _save(fig, path, dpi=110)
    return Path(path)
