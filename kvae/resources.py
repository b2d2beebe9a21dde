"""What a model will take, estimated from its settings before anything is allocated.

Each setting of a config is checked on its own against `kvae.bounds.BOUNDS`;
products of settings are not: `model.hidden_units = 400000` is 1.3e11
weights, `data.window_seconds = 300` with `data.batch_size = 65536` a
220 GiB batch. `estimate` computes, from a config (or the config inside a
`.keras` file, before Keras builds the model), the parameter count, the bytes
of the weights with their gradients and optimizer state, and the activation
memory of one batch, by the model type's own formula (an estimate: within a
small factor of what the backend allocates, never an overestimate of the
cheap cases). `check_config` and `check_model_config` refuse, on one line
naming the settings that drive it, a model of more than `MAX_PARAMETERS`
parameters or one that would take more than the memory available now.
"""

import math

from kvae import bounds
from kvae.errors import KvaeError

MAX_PARAMETERS = 2 ** 31  # 8 GiB of float32 weights: a thousand times the largest preset
FLOAT = 4  # bytes of a float32
TRAINING_COPIES = 5  # weights, gradients, Adam's two moments, the initializers' temporaries
LOADING_COPIES = 2  # the built weights and the initializers' temporaries, then the loaded values
WEIGHTS_SLACK = 16  # a saved file holds at least 1/16 of the float32 bytes its config's estimate gives
LOSS_FLOATS = 32  # floats per sample of the loss's own arrays (the input, the output, the STFTs of the MR-STFT loss)
INFERENCE_BATCH = 64  # clips per batch of sample, evaluate and reconstruct

# the settings that drive each model type's size, named in the message
DRIVERS = {
    "fc": ("hidden_units", "hidden_layers", "latent_dim"),
    "conv1d": ("channels", "kernel_sizes", "strides", "latent_dim"),
    "transformer": ("d_model", "num_layers", "ff_dim", "frame_size", "latent_dim"),
    "rave": ("capacity", "ratios", "n_bands", "dilations", "latent_dim"),
    "vocos": ("width", "encoder_blocks", "decoder_blocks", "n_fft", "latent_dim"),
    "magnitude": ("width", "encoder_blocks", "decoder_blocks", "n_fft", "latent_dim"),
    "mel": ("channels", "n_mels", "latent_dim"),
}


def _ints(value, n=None):
    values = list(value) if isinstance(value, (list, tuple)) else [value] * (n or 1)
    return [max(int(v), 1) for v in values]


def _sizes(kind, m, window):
    """`(parameters, activation floats per sample)` of a model type with settings `m` (defaults filled in)."""
    latent = max(int(m.get("latent_dim") or 1), 1)
    if kind == "fc":
        h, layers = max(int(m["hidden_units"]), 1), max(int(m["hidden_layers"]), 1)
        params = 2 * window * h + 2 * (layers - 1) * h * h + 3 * h * latent
        return params, 8 * layers * h
    if kind in ("conv1d", "mel"):
        channels = _ints(m["channels"])
        n = len(channels)
        kernels = _ints(m.get("kernel_sizes", m.get("kernel_size", 3)), n)
        strides = _ints(m.get("strides", 2), n)
        params, acts, length, before = 0, 0, window, 1
        for c, k, s in zip(channels, kernels, strides):
            params += 2 * before * c * k * (k if kind == "mel" else 1)
            length = max(length // s, 1)
            acts += 4 * c * length
            before = c
        return params + 3 * before * length * latent, acts
    if kind == "transformer":
        d, layers, ff, frame = (max(int(m[k]), 1) for k in ("d_model", "num_layers", "ff_dim", "frame_size"))
        frames = max(window // frame, 1)
        params = 2 * (frame * d + layers * (4 * d * d + 2 * d * ff)) + 2 * frames * d + 3 * d * latent
        return params, 2 * layers * frames * (8 * d + 2 * ff + int(m.get("num_heads", 1)) * frames)
    if kind == "rave":
        capacity, bands = max(int(m["capacity"]), 1), max(int(m["n_bands"]), 1)
        ratios, dilations = _ints(m["ratios"]), _ints(m["dilations"])
        kernel = max(int(m["kernel_size"]), 1)
        params, acts, length = 0, 0, max(window // bands, 1)
        for i, r in enumerate(ratios):
            width = capacity * 2 ** i
            params += 2 * (2 * len(dilations) * width * width * kernel + 2 * width * width * 2 * r)
            acts += 2 * width * length * (2 * len(dilations) + 2)
            length = max(length // r, 1)
        return params + 3 * capacity * 2 ** len(ratios) * latent, acts
    if kind in ("vocos", "magnitude"):
        width, blocks = max(int(m["width"]), 1), int(m["encoder_blocks"]) + int(m["decoder_blocks"])
        frames = max(window // max(int(m["hop"]), 1), 1)
        params = blocks * (width * int(m["kernel_size"]) + 6 * width * width) + 3 * (int(m["n_fft"]) + 2) * width
        return params + 3 * width * latent, 8 * blocks * frames * width
    return 0, 0


def estimate(model, sample_rate, window_seconds, batch_size, training=True):
    """The size of a model and of one batch through it.

    Args:
        model: dict. The `model` table of a config (`type` and its settings; defaults fill the rest).
        sample_rate, window_seconds: the data's.
        batch_size: int. Windows per batch.
        training: bool. Count gradients and Adam's moments (else the weights only).

    Returns:
        A dict: `parameters`, `weights` (bytes, with gradients and optimizer
        state when training), `activations` (bytes of one batch) and `total`.
    """
    from kvae.config import model_defaults

    kind = model.get("type", "fc")
    settings = {**model_defaults(kind), **{k: v for k, v in model.items() if v is not None}}
    window = bounds.window_samples(sample_rate, window_seconds)
    try:
        params, acts = _sizes(kind, settings, window)
    except (KeyError, TypeError, ValueError, OverflowError):  # a setting the model itself refuses on its own line
        params, acts = 0, 0
    weights = params * FLOAT * (TRAINING_COPIES if training else LOADING_COPIES)
    activations = int(batch_size) * (acts + LOSS_FLOATS * window) * FLOAT * (2 if training else 1)
    return {"parameters": params, "weights": weights, "activations": activations, "total": weights + activations}


def _refuse(found, names, what, available):
    """One line naming the settings when `found` is over `MAX_PARAMETERS` or the memory available."""
    if found["parameters"] > MAX_PARAMETERS:
        raise KvaeError(f"{names}: about {found['parameters']:,.0f} parameters, more than kvae builds "
                        f"({MAX_PARAMETERS:,}); lower them")
    if available is not None and found["total"] > available:
        raise KvaeError(f"{names}: {what}, about {_size(found['total'])} needed ({found['parameters']:,} "
                        f"parameters, {_size(found['activations'])} for one batch), {_size(available)} "
                        "available; lower them")


def _size(count):
    return f"{count / 2**30:,.1f} GiB" if count >= 2 ** 30 / 10 else f"{count / 2**30:.2g} GiB"


def _names(kind, model, extra):
    shown = [f"model.{key} {model[key]}" for key in DRIVERS.get(kind, ()) if key in model]
    return ", ".join([f"model.type {kind}"] + shown + list(extra))


def check_config(config):
    """Refuse an experiment config whose model and batch would not fit (`estimate`), before anything is built.

    Raises:
        KvaeError: naming the model's size settings, `data.window_seconds` and `data.batch_size`.
    """
    data, model = config["data"], config["model"]
    found = estimate(model, data["sample_rate"], data["window_seconds"], data["batch_size"])
    _refuse(found, _names(model.get("type", "fc"), model, (f"data.window_seconds {data['window_seconds']:g}",
                                                          f"data.batch_size {data['batch_size']}")),
            "training the model and one batch", bounds.available_memory())


def check_model_config(path, saved, weights_bytes=None):
    """Refuse the model a `.keras` file's `config.json` describes (`saved`, a dict) before Keras builds it: too
    large for the memory available, or far larger than the weights the file holds (`weights_bytes`, what its
    weights member unpacks to: a config edited to describe another model).

    Raises:
        KvaeError: naming the file and the model's size settings.
    """
    from kvae.models import MODELS

    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        return
    kinds = {cls.__name__: name for name, cls in MODELS.items()}
    kind = kinds.get(saved.get("class_name"))
    if kind is None:
        return  # a prior or another Keras model: loading says what it is
    cfg = saved["config"]
    try:
        rate, seconds = float(cfg.get("sample_rate", bounds.DEFAULT_RATE)), float(cfg.get("window_seconds", 1.0))
        if not (math.isfinite(rate) and math.isfinite(seconds)):
            return
        bounds.check("data.sample_rate", rate, f"{path}: its sample_rate")
        bounds.check_window(rate, seconds, label=f"{path}: its window_seconds")
    except (TypeError, ValueError):
        return
    model = {**{k: v for k, v in cfg.items() if k not in ("name", "dtype", "trainable")}, "type": kind}
    found = estimate(model, rate, seconds, INFERENCE_BATCH, training=False)
    if weights_bytes is not None and found["parameters"] * FLOAT > WEIGHTS_SLACK * max(weights_bytes, 2 ** 20):
        raise KvaeError(f"{path}: its config describes about {found['parameters']:,} parameters "
                        f"({_names(kind, model, ()).replace('model.', '')}) but its weights are "
                        f"{weights_bytes / 2**20:,.1f} MB; not a model this file holds, refusing to build it")
    _refuse(found, f"{path}: its " + _names(kind, model, ()).replace("model.", ""), "the model and a batch",
            bounds.available_memory())
