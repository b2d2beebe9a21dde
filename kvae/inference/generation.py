"""`kvae generate`: long pieces from a trained run, streamed frame by frame to a WAV file.

A piece is a sequence of latent frames (`kvae.inference.latents`) decoded
window by window and overlap-added with a crossfade. Where the frames come
from is the `prior`:

- `"ar"`: the run's autoregressive `LatentPrior` (`RUN/prior/prior.keras`,
  made by `kvae prior fit`), each frame drawn given the ones before it;
- `"gmm"`: the latent mixture stored with `RUN/prior/model.keras`, one
  independent draw per window (the ex-post density prior);
- `"none"`: independent N(0, I) draws, per frame (what `model.sample` does,
  one window at a time);
- `"auto"`: `ar` if the run has a fitted prior, else `gmm` if the model has a
  mixture, else `none` (with a printed note).

Generation streams: it holds one window of audio, one window of frames and
the prior's context, and writes finished samples as they come, so memory does
not grow with the length of the piece. Every random draw is numpy, piece `i`
from `np.random.default_rng([seed, i])`, so a seed gives the same piece again.
`prime` encodes a recording and continues it: the piece starts with the
prime (as the model reconstructs it) and the prior carries on from its frames.
"""

import time
from pathlib import Path

import numpy as np

from kvae import bounds
from kvae.errors import KvaeError

PRIORS = ("auto", "none", "gmm", "ar")


def run_normalize(run):
    """The `data.normalize` a run folder (or a model file in it or in its `prior/`) was trained with."""
    import json

    from kvae.runs import RunFolder

    if not isinstance(run, (str, Path)):
        return "none"
    run = Path(run)
    for folder in (run, run.parent, run.parent.parent) if not run.is_dir() else (run,):
        try:  # a run's config has a data section (a prior folder's config.json does not)
            data = json.loads(RunFolder(folder).config.read_text()).get("data")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(data, dict):
            return data.get("normalize", "none")
    return "none"


def _load_run(run, prior, ar_prior=None):
    """`(model, ar_prior or None, inputs)` for a run folder, a `.keras` file or a model."""
    from kvae.models.loading import load
    from kvae.runs import RunFolder

    inputs = []
    if not isinstance(run, (str, Path)):
        model = run
    else:
        run = Path(run)
        if run.is_dir():
            folder = RunFolder(run)
            model_path = folder.prior.model if folder.prior.model.is_file() else folder.model  # with its mixture
            if ar_prior is None and folder.prior.prior_model.is_file() and prior in ("auto", "ar"):
                ar_prior = folder.prior.prior_model
        else:
            model_path = run
        model = load(model_path, compile=False)
        inputs.append(model_path)
    if isinstance(ar_prior, (str, Path)):
        inputs.append(Path(ar_prior))
        ar_prior = load(ar_prior, compile=False)
    return model, ar_prior, inputs


def resolve_prior(prior, model, ar_prior):
    """The prior actually used, and a note to print when there is something to say."""
    if prior not in PRIORS:
        raise KvaeError(f"prior: must be one of {', '.join(PRIORS)}, got {prior!r}")
    if prior == "ar" and ar_prior is None:
        raise KvaeError("prior ar: this run has no fitted prior (RUN/prior/prior.keras); run `kvae prior fit RUN`")
    if prior == "gmm" and model.latent_gmm is None:
        raise KvaeError("prior gmm: this model has no latent mixture (RUN/prior/model.keras); run `kvae prior fit RUN`")
    if prior != "auto":
        return prior, None
    if ar_prior is not None:
        return "ar", None
    if model.latent_gmm is not None:
        return "gmm", "no autoregressive prior: independent draws from the latent mixture (gmm), window by window"
    return "none", ("no fitted prior (run `kvae prior fit RUN`): decoding independent N(0, I) draws, "
                    "nothing ties one moment to the next")


def _check_prior(ar_prior, layout):
    if ar_prior.latent_dim != layout.channels or (ar_prior.latent_shape is not None
                                                   and tuple(ar_prior.latent_shape) != layout.latent_shape):
        raise KvaeError(f"prior: fitted for latents of shape {ar_prior.latent_shape}, but the model's are "
                        f"{layout.latent_shape}")


class CorrelatedNormal:
    """A piece's Generator whose standard normals are correlated from one call to the next (AR(1)).

    Each `standard_normal(size)` returns `rho * previous + sqrt(1 - rho^2) * fresh`: still N(0, I) draw by
    draw, but the noise of consecutive latent frames moves together instead of jumping every frame. Every
    other method (`choice`, `random`, ...) is the wrapped Generator's.
    """

    def __init__(self, rng, rho):
        self.rng, self.rho, self.previous = rng, float(rho), None

    def standard_normal(self, size=None):
        fresh = self.rng.standard_normal(size)
        if self.previous is not None and np.shape(self.previous) == np.shape(fresh):
            fresh = self.rho * self.previous + np.sqrt(1.0 - self.rho ** 2) * fresh
        self.previous = fresh
        return fresh

    def __getattr__(self, name):
        return getattr(self.rng, name)


NOISE_CORRELATION = 0.0
"""`generate`'s default noise correlation of the autoregressive prior's draws (see `CorrelatedNormal`)."""

AR_TEMPERATURE = 0.7
"""`generate`'s default temperature with a frame-by-frame autoregressive prior (conv or transformer; 1 with
the others). On ufoai their 30-s pieces were more realistic at 0.7 than at 1, with either head
(docs/results.md#prior-draws), and a conditioned prior's pieces more often in their label's style
(docs/results.md#conditioning-accuracy). A prior class may say otherwise (`ChunkPrior.default_temperature`)."""


def stream_pieces(model, seconds, n=1, prior="none", ar_prior=None, temperature=1.0, seed=0, prime=None,
                  normalize="none", condition=None, guidance=1.0, noise_correlation=0.0):
    """Generate `n` pieces side by side, yielding their audio as it is finished.

    Args:
        model: the VAE.
        seconds: float. Length of each piece.
        n: int. Pieces.
        prior: str. `"none"`, `"gmm"` or `"ar"` (resolved, see `resolve_prior`).
        ar_prior: `LatentPrior` or None. Needed for `"ar"`.
        temperature: float. Spread of the draws (0: means only).
        seed: int. Piece i draws from `np.random.default_rng([seed, i])`.
        prime: 1-D float32 array at the model's rate, or None. Every piece starts with it.
        normalize: str. The run's `data.normalize`, applied to the prime's windows.
        condition: None, a label or a label per piece, for a conditioned `"ar"` prior
            (`kvae.models.ConditionedPrior`; None: unconditional).
        guidance: float. Its classifier-free guidance scale (1: as trained).
        noise_correlation: float in [0, 1). With `"ar"`, the correlation of the noise of consecutive frames'
            draws (`CorrelatedNormal`; 0: independent, as the prior was trained to predict).

    Yields:
        float32 arrays `(n, k)`, consecutive stretches of the pieces (k may be 0).
    """
    from kvae.inference.latents import FrameWindows, LatentLayout, StreamDecoder

    seconds = bounds.check("seconds", seconds)
    temperature = bounds.check("temperature", temperature)
    seed = bounds.check("seed", seed)
    n = bounds.check("pieces", n, "n")
    layout = LatentLayout(model)
    total = int(round(seconds * model.sample_rate))
    decoder = StreamDecoder(model, layout, int(n), total)
    windows = decoder.windows
    rngs = [np.random.default_rng([int(seed), i]) for i in range(int(n))]
    kept = 0
    prime_windows = prime_frames = None
    if prime is not None:
        prime = np.asarray(prime, np.float32).reshape(-1)
        kept = max(1, (len(prime) - layout.window) // layout.hop_samples + 1) if len(prime) >= layout.window else 1
        if kept >= windows:
            raise KvaeError(f"prime: a {len(prime) / model.sample_rate:.2f}-s prime leaves nothing to generate in a "
                            f"{seconds:g}-s piece; ask for more seconds")
        prime_windows, prime_frames = layout.encode(model, prime[: layout.samples_for(kept)], limit=kept,
                                                    normalize=normalize)

    if prior == "gmm":  # whole windows, independently from the mixture
        for i in range(windows):
            if i < kept:
                z = np.repeat(prime_windows[i:i + 1], n, axis=0)
            else:
                z = np.concatenate([model.sample_latents_gmm(1, rng, temperature) for rng in rngs])
            yield decoder.push(z)
        return

    if prior == "ar":
        from kvae.models.conditioned_prior import conditioned_stepper

        _check_prior(ar_prior, layout)
        stepper = conditioned_stepper(ar_prior, int(n), condition, bounds.check("guidance", guidance))
        draw = ar_prior.sampler()
        rho = bounds.check("noise_correlation", noise_correlation)
        draw_rngs = [CorrelatedNormal(rng, rho) for rng in rngs] if rho else rngs
        mixture = stepper.push(np.zeros((int(n), layout.channels), np.float32))  # the start frame it was trained with
    assembler = FrameWindows(layout, int(n))
    primed = layout.frames_for(kept) if kept else 0
    for t in range(layout.frames_for(windows)):
        if t < primed:
            frame = np.repeat(prime_frames[t:t + 1], n, axis=0)
        elif prior == "ar":
            frame = ar_prior.denormalize(draw(mixture, draw_rngs, temperature))
        else:
            frame = np.stack([rng.standard_normal(layout.channels).astype(np.float32) * float(temperature)
                              for rng in rngs])
        if prior == "ar":
            mixture = stepper.push(ar_prior.normalize(frame))
        window = assembler.push(frame)
        if window is not None:
            yield decoder.push(window)


def _check_condition(used, ar_prior, n, condition, guidance):
    """A condition or guidance only with a conditioned autoregressive prior; a known label (before any work)."""
    from kvae.models.conditioned_prior import condition_ids

    if used != "ar" and (condition is not None or guidance != 1):
        raise KvaeError(f"{'condition' if condition is not None else 'guidance'}: needs the run's autoregressive "
                        f"prior (prior ar), not prior {used}")
    if used == "ar":
        condition_ids(ar_prior, int(n), condition, guidance)


def _piece_paths(out, n):
    out = Path(out)
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix or '.wav'}") for i in range(n)]


def generate(run, seconds=30.0, out=None, prior="auto", temperature=None, seed=0, prime=None, n=1, ar_prior=None,
             verbose=False, overwrite=False, condition=None, guidance=1.0, noise_correlation=None):
    """Generate long pieces from a trained run (see the module docstring).

    Args:
        run: a run folder (its `prior/` is used when present), a `.keras`
            file, or a VAE.
        seconds: float. Length of each piece. Defaults to 30.
        out: str, Path or None. WAV file to stream to (`n > 1`: `<stem>_<i>.wav`);
            None returns the audio instead.
        prior: str. `"auto"`, `"ar"`, `"gmm"` or `"none"`. Defaults to "auto".
        temperature: float or None. Spread of the draws. None: `AR_TEMPERATURE`
            (0.7) with a frame-by-frame autoregressive prior, 1 with the
            others (the chunk prior, the mixture, N(0, I) draws).
        seed: int. The same seed gives the same pieces. Defaults to 0.
        prime: str, Path or None. A recording to continue (resampled to the
            model's rate); the piece starts with it.
        n: int. Pieces, generated side by side. Defaults to 1.
        ar_prior: `LatentPrior`, path or None. A prior other than the run's.
        verbose: bool. Print what was made (and a note when no prior is fitted).
        overwrite: bool. Replace existing output files (never a model, an
            input or a run's own file). Defaults to False.
        condition: str, list or None. For a prior fitted with `--condition`: the
            label to generate in (one per piece, or one for all); an unknown one
            is an error listing the known ones. None: unconditional.
        guidance: float. Classifier-free guidance scale of a conditioned prior
            (1: as trained; above 1 leans further towards the label). Defaults to 1.
        noise_correlation: float in [0, 1) or None. With the autoregressive prior, how much of each frame's
            noise the next frame keeps (`CorrelatedNormal`); None: `NOISE_CORRELATION`. 0 draws every frame
            independently (kvae before 0.3).

    Returns:
        A list of the written paths, or with `out=None` a float32 array `(n, samples)`.

    Example:
    ```python
    import kvae
    kvae.generate("runs/conv1d", seconds=30, out="piece.wav", seed=1)
    ```
    """
    from kvae.data import WavWriter, read_audio, resample
    from kvae.paths import check_free_space, remove_stale_temporaries
    from kvae.runs import check_output_file

    seconds = bounds.check("seconds", seconds)
    temperature = None if temperature is None else bounds.check("temperature", temperature)
    seed, n = bounds.check("seed", seed), bounds.check("pieces", n, "n")
    if out is not None:  # before any work: nothing the user has is replaced
        given = [p for p in (run, prime, ar_prior) if isinstance(p, (str, Path))]
        for path in _piece_paths(out, n):
            check_output_file(path, given, example="piece.wav", overwrite=overwrite)
    guidance = bounds.check("guidance", guidance)
    noise_correlation = bounds.check("noise_correlation",
                                     NOISE_CORRELATION if noise_correlation is None else noise_correlation)
    model, ar_prior, inputs = _load_run(run, prior, ar_prior)
    used, note = resolve_prior(prior, model, ar_prior)
    if temperature is None:
        temperature = getattr(ar_prior, "default_temperature", AR_TEMPERATURE) if used == "ar" else 1.0
    _check_condition(used, ar_prior, n, condition, guidance)
    if note and verbose:
        print(f"note: {note}")
    prime_audio = None
    if prime is not None:
        audio, rate = read_audio(prime)
        prime_audio = resample(audio, rate, model.sample_rate)
        inputs.append(Path(prime))
    start = time.perf_counter()
    chunks = stream_pieces(model, seconds, int(n), used, ar_prior if used == "ar" else None, temperature, seed,
                           prime_audio, normalize=run_normalize(run), condition=condition, guidance=guidance,
                           noise_correlation=noise_correlation)
    if out is None:
        bounds.check_memory(4 * n * int(round(seconds * model.sample_rate)), "the pieces, returned in memory",
                            "ask for fewer or shorter pieces, or give out= to stream them to a file")
        return np.concatenate(list(chunks), axis=1)
    paths = _piece_paths(out, n)
    check_free_space(paths[0].parent, 4 * n * int(round(seconds * model.sample_rate)), "of audio to write",
                     "ask for fewer or shorter pieces")
    for folder in {p.parent for p in paths}:
        remove_stale_temporaries(folder)  # what a killed generate left
    writers = []
    try:
        for path in paths:  # checked before the work; WavWriter refuses the loaded model files too
            writers.append(WavWriter(path, model.sample_rate, inputs=inputs, what="writing the piece"))
        for chunk in chunks:
            for writer, row in zip(writers, chunk):
                writer.write(row)
        paths = [w.close() for w in writers]
        for writer in writers:
            writer.warn()  # a silent or clipped piece says so
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    if verbose:
        detail = used
        if used == "ar":
            head = f", flow head of {ar_prior.flow_steps} steps" if getattr(ar_prior, "head_kind", "") == "flow" else ""
            detail += (f" ({ar_prior.kind}{head}, {ar_prior.context_length} frames of context = "
                       f"{ar_prior.context_length / ar_prior.frame_rate:.1f} s)" if ar_prior.frame_rate else "")
            if condition is not None:
                detail += f", condition {condition}" + (f", guidance {guidance:g}" if guidance != 1 else "")
        for path in paths:
            print(f"{path}: {seconds:g} s at {model.sample_rate} Hz, prior {detail}, seed {seed}, "
                  f"temperature {temperature:g}"
                  + (f", noise correlation {noise_correlation:g}" if used == "ar" else "")
                  + (f", primed with {prime}" if prime else ""))
        print(f"generated in {time.perf_counter() - start:.1f} s")
    return paths
