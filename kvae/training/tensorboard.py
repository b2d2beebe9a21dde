"""TensorBoard for `kvae fit` and `kvae prior fit`: the logged scalars, and audio to listen to while training runs.

`kvae fit --tensorboard` (or `train.tensorboard = true`) writes event files
into the run folder, so `tensorboard --logdir runs/` shows every run:

    RUN/tensorboard/train/        epoch_<name> of every logged training value (loss, reconstruction, kl,
                                  rate_bps, beta, ...); audio and spectrogram images
    RUN/tensorboard/validation/   epoch_<name> of every val_<name> (the same tags: the curves overlay)
    RUN/prior/tensorboard/...     the same for `kvae prior fit --tensorboard`

Every `train.tensorboard_every` epochs (default 5), and after the last
epoch, the `train` folder gets, at that epoch as step:

- `reconstruction/<i>` and `reconstruction_spectrogram/<i>`: a few held-out
  windows (evenly spaced over the test split, the same every time) through
  the model, as audio and as a log-magnitude spectrogram image;
- `sample/<i>` and `sample_spectrogram/<i>`: prior samples (the same seeds
  every time, so one hears the same draws mature);
- once, at the first such epoch: `input/<i>` and `input_spectrogram/<i>`,
  the held-out windows themselves;
- for the prior: `piece/<i>`, short pieces generated with the prior as it is
  (`kvae.inference.generation.stream_pieces`).

The writer is PyTorch's `torch.utils.tensorboard.SummaryWriter` (torch is a
kvae dependency; the files are TensorBoard's own format), so it needs no
TensorFlow graph and works on every backend; the `tensorboard` package comes
with TensorFlow. Only the process that writes the run folder writes events
(rank 0 of a data-parallel run). A resumed run goes on from its epoch.
"""

import numpy as np

import keras

FOLDER = "tensorboard"
DEFAULT_EVERY = 5
CLIPS = 3
PIECE_SECONDS = 4.0


def spectrogram_image(clip, sample_rate, scale=2):
    """A log-magnitude spectrogram of one clip as an RGB image, low frequencies at the bottom.

    Args:
        clip: 1-D float array.
        sample_rate: int. Its rate (sets the FFT size: 256 points at 3000 Hz).
        scale: int. Each time-frequency cell drawn as `scale` x `scale` pixels.

    Returns:
        uint8 `(height, width, 3)`: magma colours over the 80 dB below the
        clip's loudest cell.
    """
    from matplotlib import colormaps

    from kvae.dsp.filters import fitting_fft_size, scaled_fft_size
    from kvae.dsp.spectral import stft

    clip = np.asarray(clip, np.float64).reshape(-1)
    n_fft = min(scaled_fft_size(sample_rate, 4096), fitting_fft_size(len(clip)))
    spec = np.abs(stft(clip[None], n_fft, max(n_fft // 8, 1))[0]).T  # (bins, frames)
    db = 20.0 * np.log10(np.maximum(spec, 1e-8))
    db = np.clip((db - (db.max() - 80.0)) / 80.0, 0.0, 1.0)
    rgb = (colormaps["magma"](db[::-1])[..., :3] * 255).astype(np.uint8)
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


class TensorBoardLogger(keras.callbacks.Callback):
    """Writes every epoch's logs, and every few epochs audio and spectrograms, as TensorBoard event files.

    Args:
        log_dir: str or Path. The event folder (`RUN/tensorboard`); `train/`
            and `validation/` are made under it.
        sample_rate: int. The audio's rate.
        audio: callable or None. `audio(model)` returns a dict of name to
            clips `(n, samples)` written every `every` epochs (None: scalars only).
        inputs: float array `(n, samples)` or None. Written once as `input/<i>`.
        every: int. Epochs between audio. Defaults to 5.
    """

    def __init__(self, log_dir, sample_rate, audio=None, inputs=None, every=DEFAULT_EVERY):
        super().__init__()
        self.log_dir = str(log_dir)
        self.sample_rate = int(sample_rate)
        self.audio = audio
        self.inputs = None if inputs is None else np.asarray(inputs, np.float32)
        self.every = max(1, int(every))
        self._writers = None
        self._last_audio = None
        self._epoch = None

    def _open(self):
        if self._writers is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writers = {name: SummaryWriter(log_dir=f"{self.log_dir}/{name}") for name in ("train", "validation")}
        return self._writers

    def on_epoch_end(self, epoch, logs=None):
        writers = self._open()
        for key, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            writers[split].add_scalar(f"epoch_{name}", value, epoch + 1)
        self._epoch = epoch + 1
        if self.audio is not None and (epoch + 1) % self.every == 0:
            self.write_audio(epoch + 1)
        for writer in writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        if self._writers is None:
            return
        if self.audio is not None and self._epoch is not None and self._last_audio != self._epoch:
            self.write_audio(self._epoch)
        for writer in self._writers.values():
            writer.close()
        self._writers = None

    def write_audio(self, step):
        """Write the `audio(model)` clips (and, the first time, the inputs) at `step`.

        Args:
            step: int. The epoch they are written at.
        """
        writer = self._open()["train"]
        sets = dict(self.audio(self.model))
        if self._last_audio is None and self.inputs is not None:
            sets = {"input": self.inputs, **sets}
        for name, clips in sets.items():
            for i, clip in enumerate(np.asarray(clips, np.float32)):
                clip = np.clip(np.nan_to_num(clip), -1.0, 1.0)
                writer.add_audio(f"{name}/{i}", clip, step, sample_rate=self.sample_rate)
                writer.add_image(f"{name}_spectrogram/{i}", spectrogram_image(clip, self.sample_rate), step,
                                 dataformats="HWC")
        writer.flush()
        self._last_audio = step


def fit_logger(config, run_dir, corpus, n=CLIPS):
    """The `TensorBoardLogger` of `kvae fit`: reconstructions of `n` held-out windows and `n` prior samples.

    Args:
        config: dict. The resolved run config (`train.tensorboard_every`, `train.seed`, `data.*`).
        run_dir: Path. The run folder; events go to `RUN/tensorboard`.
        corpus: kvae.data.Corpus. The prepared data (its test split gives the windows).
        n: int. Clips of each kind. Defaults to 3.
    """
    from kvae import bounds
    from kvae.evaluation.evaluate import windows

    data, seed = config["data"], int(config["train"]["seed"])
    window = bounds.window_samples(data["sample_rate"], data["window_seconds"])
    held_out, _ = windows(corpus, "test", window, n, random=False, seed=seed)

    def audio(model):
        return {"reconstruction": model.reconstruct(held_out), "sample": model.sample(n, seed=seed)}

    return TensorBoardLogger(run_dir / FOLDER, data["sample_rate"], audio=audio, inputs=held_out,
                             every=config["train"]["tensorboard_every"])


def prior_logger(model, folder, every=DEFAULT_EVERY, n=2, seconds=PIECE_SECONDS, seed=0):
    """The `TensorBoardLogger` of `kvae prior fit`: `n` pieces of `seconds` generated with the prior in training.

    Args:
        model: the run's VAE (decodes the prior's frames).
        folder: Path. The prior folder; events go to `PRIOR/tensorboard`.
        every: int. Epochs between pieces. Defaults to 5.
        n: int. Pieces. Defaults to 2.
        seconds: float. Length of each piece. Defaults to 4.
        seed: int. Seed of the pieces (the same every time).
    """
    from kvae.inference.generation import stream_pieces

    def audio(prior):
        parts = list(stream_pieces(model, seconds, n=n, prior="ar", ar_prior=prior, seed=seed))
        return {"piece": np.concatenate(parts, axis=1)}

    return TensorBoardLogger(folder / FOLDER, model.sample_rate, audio=audio, every=every)
