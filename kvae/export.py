"""Taking a model out of Keras: ONNX graphs of the encoder, the decoder and the prior's one-step function.

`export_onnx(run, out)` writes into the folder `out` (new, empty, or one an
earlier export wrote; `kvae.paths.OwnedFolder`), always one consistent set:
an earlier export's graphs are removed first, and the marker
(`.kvae-export.json`) names the run the set came from (`source`), its
files, and `complete` once all of them are written:

- `encoder.onnx`: input `audio` float32 `(batch, window)`; outputs `z_mean`
  and `z_scale` float32 `(batch, *latent_shape)`: the posterior's mean and
  standard deviation (`exp(0.5 * z_log_var)`, the log variance clipped to
  [-20, 10] as `VAE.encode` does).
- `decoder.onnx`: input `z` float32 `(batch, *latent_shape)`; output `audio`
  float32 `(batch, window)` (`to_audio(decode(z))`).
- `prior_step.onnx`, when the run has a fitted convolutional prior with the
  mixture head and without a condition (`RUN/prior/prior.keras`; a flow-head
  or conditioned prior is not exported,
  with a note): one frame of the autoregressive prior with its
  cached state. Inputs `frame` float32 `(batch, latent_dim)` (latent units)
  and `state_0` ... `state_{L-1}` float32 `(batch, span_i, width)`; outputs
  the next frame's Gaussian mixture `weights` `(batch, k)`, `means` and
  `scales` `(batch, k, latent_dim)` in latent units, and `state_0_out` ...
  The first frame pushed is the start frame (`start_frame` in the
  metadata), the states start at zero; each call's `state_i_out` is the next
  call's `state_i`. Frames become the decoder's window latents as in
  `kvae.inference.latents`: `frames_per_window` frames every `hop_frames`
  frames, crossfaded every `frame_hop_samples` samples (in its metadata).

The batch axis is dynamic. Each graph's `metadata_props` hold the
signature: `format` (`kvae-onnx-1`), `kvae_version`, `model_class`,
`sample_rate`, `window`, `hop` (samples between windows when overlap-adding,
`window // 2`), `latent_shape` and `latent_dim`, `inputs`, `outputs` (JSON
lists of names), and for the prior `components`, `start_frame`,
`state_shapes` (JSON), `receptive_field`, `frames_per_window`, `hop_frames`
and `frame_hop_samples`.

The graphs are traced on the torch backend with `torch.onnx.export`'s
TorchScript exporter (opset 18): Keras's own `model.export(format="onnx")`
exports a model's `call`, which for a kvae VAE is the noisy training pass,
not the encoder's mean and scale or the decoder's audio, and names neither
inputs nor outputs; torch's newer dynamo exporter needs onnxscript, whose
releases need ml_dtypes >= 0.5 where tensorflow-cpu 2.17 (a kvae
dependency) pins ml_dtypes < 0.5. Models whose graphs use complex FFTs (the
mel VAE's STFT and Griffin-Lim) are refused with one line naming the reason.
`kvae.inference.onnx.OnnxVAE` (importable from here too) runs an exported
folder with onnxruntime; the format's name and file names are its.
"""

import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from kvae.errors import KvaeError
from kvae.inference.onnx import DECODER_FILE, ENCODER_FILE, FORMAT, PRIOR_FILE, OnnxVAE, tolerance  # noqa: F401

OPSET = 18

NOT_EXPORTABLE = {
    "MelVAE": "its log-mel STFT and its Griffin-Lim decoder are complex FFTs (torch.stft, irfft), which torch's "
              "TorchScript ONNX exporter does not convert (the dynamo exporter needs onnxscript, which needs "
              "ml_dtypes >= 0.5, where tensorflow-cpu 2.17 pins < 0.5)",
    "VocosVAE": "its STFT-frame encoder and inverse-STFT head are complex FFTs (torch.stft, irfft), which torch's "
                "TorchScript ONNX exporter does not convert (the same limit as MelVAE's)",
    "MagnitudeVAE": "its log-magnitude STFT and its Griffin-Lim phase are complex FFTs (torch.stft, irfft), which "
                    "torch's TorchScript ONNX exporter does not convert (the same limit as MelVAE's)",
}
"""Model classes that cannot be exported, and why (the one line `export_onnx` raises)."""


def check_exportable(model):
    """Refuse, with one line, a model that cannot be exported (see `NOT_EXPORTABLE`) or a backend other than torch.

    Raises:
        KvaeError: the model's class is in `NOT_EXPORTABLE`, the Keras backend
            is not torch, or the model computes in another dtype than float32.
    """
    import keras

    name = type(model).__name__
    if name in NOT_EXPORTABLE:
        raise KvaeError(f"kvae export: {name} cannot be exported to ONNX: {NOT_EXPORTABLE[name]}")
    if keras.backend.backend() != "torch":
        raise KvaeError(f"kvae export: needs the torch backend (KERAS_BACKEND=torch); this process runs "
                        f"{keras.backend.backend()}")
    if getattr(model, "compute_dtype", "float32") != "float32":
        raise KvaeError(f"kvae export: the model computes in {model.compute_dtype}; the graphs are float32 "
                        "(train it with train.precision = float32)")


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise KvaeError('kvae export: needs the onnx package: pip install "kvae[export]"') from None


@contextlib.contextmanager
def _static_layer_norm():
    """Trace `layer_norm` with a Python-int normalised shape.

    Keras's torch layer normalisation passes `x.shape[-1]` as the normalised
    shape; under tracing that is a tensor, which the TorchScript exporter
    refuses ("not constant"). Feature widths of kvae models are fixed, so
    the value traced is the one every input has.
    """
    import torch.nn.functional as F

    original = F.layer_norm

    def layer_norm(x, normalized_shape, *args, **kwargs):
        return original(x, tuple(int(d) for d in normalized_shape), *args, **kwargs)

    F.layer_norm = layer_norm
    try:
        yield
    finally:
        F.layer_norm = original


def _modules(model):
    import torch
    from keras import ops

    class Encoder(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, audio):
            z_mean, z_log_var = self.vae.encode(audio)
            return z_mean, ops.exp(0.5 * z_log_var)

    class Decoder(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, z):
            return self.vae.to_audio(self.vae.decode(z))

    return Encoder(model), Decoder(model)


def signature(model):
    """The metadata every graph of `model` carries (strings), see the module docstring."""
    import kvae

    shape = [int(d) for d in model.latent_shape]
    return {"format": FORMAT, "kvae_version": kvae.__version__, "model_class": type(model).__name__,
            "sample_rate": str(model.sample_rate), "window": str(model.window), "hop": str(max(model.window // 2, 1)),
            "latent_shape": json.dumps(shape), "latent_dim": str(shape[-1])}


@contextlib.contextmanager
def _no_stdout():
    """Silence file descriptor 1 for the block: on a refusal, torch's TorchScript exporter prints the whole
    traced graph ("Torch IR graph at exception", tens of kB) from C++, whatever its log setting says."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _write_graph(module, example, path, inputs, outputs, metadata, doc):
    """Trace `module` on `example`, add the metadata, and write the graph atomically to `path`."""
    import onnx
    import torch

    from kvae.paths import atomic_path, save_error

    dynamic = {name: {0: "batch"} for name in list(inputs) + list(outputs)}
    try:
        with atomic_path(path) as tmp:
            with torch.no_grad(), _static_layer_norm(), _quiet_tracing(), _no_stdout():
                torch.onnx.export(module.eval(), tuple(torch.as_tensor(e) for e in example), str(tmp),
                                  input_names=list(inputs), output_names=list(outputs), dynamic_axes=dynamic,
                                  opset_version=OPSET, dynamo=False, do_constant_folding=True)
            graph = onnx.load(str(tmp))
            graph.doc_string = doc
            for key, value in {**metadata, "inputs": json.dumps(list(inputs)),
                               "outputs": json.dumps(list(outputs))}.items():
                entry = graph.metadata_props.add()
                entry.key, entry.value = key, str(value)
            onnx.save(graph, str(tmp))
    except OSError as exc:
        raise save_error(exc, path, "writing the ONNX graph", then="run the command again") from None
    except (RuntimeError, TypeError, ValueError) as exc:  # the exporter refuses an operation: its first line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split("[Caused by")[0].strip()[:200]
        raise KvaeError(f"kvae export: {metadata['model_class']}: the ONNX exporter failed on "
                        f"{Path(path).name}: {reason}") from None
    return Path(path)


@contextlib.contextmanager
def _quiet_tracing():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on Keras's shape arithmetic; the exporter's deprecation note
        yield


def export_onnx(run, out, prior=True, verbose=False):
    """Export a trained model (and its fitted prior) as ONNX graphs into the folder `out`.

    Args:
        run: str, Path or VAE. A run folder (its `prior/prior.keras` is
            exported too when fitted), a `.keras` file, or a model.
        out: str or Path. The output folder: new, empty, or written by an
            earlier `kvae export` (never a run folder nor other files).
        prior: bool or `LatentPrior`. Export the run's prior when there is
            one (True), not (False), or this prior. Defaults to True.
        verbose: bool. Print each file with its signature.

    Returns:
        A dict of `"encoder"`, `"decoder"` (and `"prior"`) to the written paths.

    Raises:
        KvaeError: the model cannot be exported (its class, the backend, no
            onnx package); `out` is not a folder kvae export may write; a
            write failed.

    Example:
    ```python
    kvae.export.export_onnx("runs/conv1d", "runs/conv1d-onnx")
    ```
    """
    from kvae.models.loading import load
    from kvae.paths import save_error
    from kvae.runs import RunFolder, is_run_folder

    ar_prior = prior if prior not in (True, False, None) else None
    if isinstance(run, (str, Path)):
        run = Path(run)
        if prior is True and run.is_dir() and RunFolder(run).prior.prior_model.is_file():
            ar_prior = load(RunFolder(run).prior.prior_model, compile=False)
        model = load(run, compile=False)
    else:
        model = run
    if not hasattr(model, "encode") or not hasattr(model, "latent_shape"):
        raise KvaeError(f"kvae export: {run}: not a VAE (a prior is exported with its run)")
    check_exportable(model)
    _require_onnx()
    if is_run_folder(out):
        raise KvaeError(f"{out}: is a run folder; give kvae export a folder of its own")
    try:
        return _export(model, ar_prior, out, run, verbose)
    except OSError as exc:  # the marker or the folder: a full disk, a read-only folder
        raise save_error(exc, out, "exporting the model", then="run the command again") from None


def _export(model, ar_prior, out, run, verbose):
    """`export_onnx` once the model is checked: a new, whole set of graphs in `out`, the marker naming its source.

    The graphs of an earlier export into the same folder are removed first, so the folder never holds one
    run's prior beside another's encoder; a killed export's temporaries are swept."""
    from kvae.paths import OwnedFolder, remove_stale_temporaries

    folder = OwnedFolder(out, "export")
    remove_stale_temporaries(folder.path)
    for name in (ENCODER_FILE, DECODER_FILE, PRIOR_FILE):
        folder.remove(name)
    source = str(Path(run).resolve()) if isinstance(run, (str, Path)) else type(run).__name__
    folder.describe(source=source, complete=False)
    meta = signature(model)
    batch = np.zeros((1, model.window), np.float32)
    z = np.zeros((1,) + tuple(model.latent_shape), np.float32)
    encoder, decoder = _modules(model)
    written = {
        "encoder": _write_graph(encoder, [batch], folder.file(ENCODER_FILE), ["audio"], ["z_mean", "z_scale"], meta,
                                f"kvae {meta['model_class']} encoder: audio (batch, {model.window}) at "
                                f"{model.sample_rate} Hz -> posterior mean and scale (batch, {meta['latent_shape']})"),
        "decoder": _write_graph(decoder, [z], folder.file(DECODER_FILE), ["z"], ["audio"], meta,
                                f"kvae {meta['model_class']} decoder: latents (batch, {meta['latent_shape']}) -> "
                                f"audio (batch, {model.window}) at {model.sample_rate} Hz"),
    }
    if ar_prior is not None:
        note = None
        if getattr(ar_prior, "kind", None) != "conv":
            note = "prior not exported: only a convolutional prior (prior.kind = conv) has a cached one-step function"
        elif getattr(ar_prior, "labels", None):
            note = ("prior not exported: prior_step.onnx has no label input, and a conditioned prior "
                    "(prior.condition) needs one")
        elif getattr(ar_prior, "head_kind", "mog") != "mog":
            note = ("prior not exported: prior_step.onnx holds the mixture head (prior.head = mog); a flow-head "
                    "prior generates in Python (kvae generate)")
        if note:
            if verbose:
                print(f"note: {note}")
        else:
            written["prior"] = _export_prior(ar_prior, folder, meta, model)
    if verbose:
        for name, path in written.items():
            print(f"{path}: {name}")
        print(f"signature: {meta['model_class']}, {meta['sample_rate']} Hz, window {meta['window']}, "
              f"hop {meta['hop']}, latent {meta['latent_shape']}")
    folder.describe(source=source, complete=True, files=sorted(Path(p).name for p in written.values()))
    return written


def _export_prior(prior, folder, meta, model):
    from kvae.inference.latents import LatentLayout

    layout = LatentLayout(model)
    module = prior_step_module(prior)
    states = [np.zeros((1,) + s, np.float32) for s in module.state_shapes]
    inputs = ["frame"] + [f"state_{i}" for i in range(len(states))]
    outputs = ["weights", "means", "scales"] + [f"state_{i}_out" for i in range(len(states))]
    extra = {**meta, "components": str(prior.components), "start_frame": json.dumps(module.start_frame.tolist()),
             "state_shapes": json.dumps([list(s) for s in module.state_shapes]),
             "receptive_field": str(prior.receptive_field), "frames_per_window": str(layout.frames_per_window),
             "hop_frames": str(layout.hop_frames), "frame_hop_samples": str(layout.hop_samples)}
    return _write_graph(module, [np.zeros((1, prior.latent_dim), np.float32)] + states, folder.file(PRIOR_FILE),
                        inputs, outputs, extra,
                        "kvae LatentPrior step: the next latent frame's Gaussian mixture from this frame and the "
                        "cached state (latent units)")


def prior_step_module(prior):
    """A torch module computing one frame of a conv `LatentPrior` with cached state (what `prior_step.onnx` holds).

    The arithmetic of the prior's numpy `stepper` in torch ops, on the
    frame in latent units (normalised inside, the mixture denormalised).

    Args:
        prior: LatentPrior. A prior with `kind="conv"`.

    Returns:
        A `torch.nn.Module` whose `forward(frame, *states)` returns
        `(weights, means, scales, *new_states)`; its `state_shapes` and
        `start_frame` say how to start.
    """
    import torch

    from kvae.models.latent_prior import _LOG_SCALE_RANGE
    from kvae.models.prior_steppers import _np

    def tensor(variable):
        return torch.as_tensor(_np(variable))

    class PriorStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.state_shapes = [((prior.kernel_size - 1) * d + 1, prior.width) for d in prior.dilations]
            self.start_frame = _np(prior.latent_mean)  # the zero start frame of training, in latent units
            self.mean, self.std = tensor(prior.latent_mean), tensor(prior.latent_std)
            self.embed = (tensor(prior.embed.kernel), tensor(prior.embed.bias))
            self.blocks = [(tensor(b.kernel), tensor(b.bias), tensor(b.project.kernel), tensor(b.project.bias),
                            b.dilation) for b in prior.blocks]
            self.norm = (tensor(prior.final_norm.gamma), tensor(prior.final_norm.beta), float(prior.final_norm.epsilon))
            self.hidden = (tensor(prior.hidden.kernel), tensor(prior.hidden.bias))
            self.head = (tensor(prior.head.kernel), tensor(prior.head.bias))

        def forward(self, frame, *states):
            width, k, c = prior.width, prior.components, prior.latent_dim
            h = ((frame - self.mean) / self.std) @ self.embed[0] + self.embed[1]
            new_states = []
            for (kernel, bias, project, project_bias, dilation), past in zip(self.blocks, states):
                past = torch.cat([past[:, 1:], h[:, None]], dim=1)
                a = bias
                for j in range(kernel.shape[0]):  # tap j looks j * dilation frames back
                    a = a + past[:, -1 - j * dilation] @ kernel[j]
                h = h + (torch.tanh(a[:, :width]) * torch.sigmoid(a[:, width:])) @ project + project_bias
                new_states.append(past)
            h = torch.nn.functional.layer_norm(h, (width,), *self.norm)
            params = torch.nn.functional.gelu(h @ self.hidden[0] + self.hidden[1]) @ self.head[0] + self.head[1]
            weights = torch.softmax(params[:, :k], dim=-1)
            means = params[:, k:k + k * c].reshape(-1, k, c) * self.std + self.mean
            log_scales = torch.clamp(params[:, k + k * c:].reshape(-1, k, c), *_LOG_SCALE_RANGE)
            return (weights, means, torch.exp(log_scales) * self.std, *new_states)

    return PriorStep()
