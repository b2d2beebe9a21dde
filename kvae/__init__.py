"""kvae: variational autoencoders that generate music from raw audio, on Keras 3.

The backend is chosen by whoever runs the program (the ``kvae`` command
defaults it to torch); importing this package never sets it.
"""

__version__ = "0.2.0"


def configure(default_backend="torch"):
    """Set up a program that uses kvae: pick the Keras backend (torch unless `KERAS_BACKEND`
    says otherwise) and quieten TensorFlow's start-up noise. Call it before importing Keras;
    the `kvae` command, the tests and the benchmarks do. Returns the backend name."""
    from kvae._env import configure as _configure

    return _configure(default_backend)


def fit(config=None, data=None, **overrides):
    """Train a VAE; see `kvae.training.fit`."""
    from kvae.training import fit as _fit

    return _fit(config=config, data=data, **overrides)


def load(path, compile=True, precision="saved"):
    """Load a saved kvae model (``.keras`` file or run folder); see `kvae.models.loading.load`."""
    from kvae.models.loading import load as _load

    return _load(path, compile=compile, precision=precision)


def fit_prior(run, config=None, **kwargs):
    """Fit the latent mixture and autoregressive prior of a trained run; see `kvae.training.fit_prior`."""
    from kvae.training import fit_prior as _fit_prior

    return _fit_prior(run, config=config, **kwargs)


def generate(run, seconds=30.0, out=None, **kwargs):
    """Generate long pieces from a trained run, streamed to WAV; see `kvae.inference.generate`."""
    from kvae.inference import generate as _generate

    return _generate(run, seconds=seconds, out=out, **kwargs)


def tune(config=None, **kwargs):
    """Run a keras-tuner search over the FC VAE; see `kvae.tuning.search`."""
    from kvae.tuning import search

    return search(config, **kwargs)
