"""Running a model exported by `kvae export` (`kvae.export.export_onnx`) with onnxruntime: `OnnxVAE`.

The exported folder is the contract between the two: its format name
(`FORMAT`, in every graph's metadata) and file names are here, with the
runner that reads them; `kvae.export` writes them.
"""

import json
from pathlib import Path

import numpy as np

from kvae.errors import KvaeError

FORMAT = "kvae-onnx-1"
ENCODER_FILE, DECODER_FILE, PRIOR_FILE = "encoder.onnx", "decoder.onnx", "prior_step.onnx"


class OnnxVAE:
    """An exported folder run with onnxruntime, with the VAE's interface for inference.

    `encode`, `decode` and `reconstruct` take and return numpy arrays, so
    `kvae.inference.reconstruct_audio` and `kvae.inference.stream` run it as they run
    the Keras model.

    Args:
        folder: str or Path. A folder written by `export_onnx`.
        threads: int. onnxruntime's intra-op threads (0: its default). Defaults to 0.

    Raises:
        KvaeError: onnxruntime is not installed, or the folder holds no exported graphs.
    """

    def __init__(self, folder, threads=0):
        try:
            import onnxruntime
        except ImportError:
            raise KvaeError('OnnxVAE: needs onnxruntime: pip install "kvae[export]"') from None
        folder = Path(folder)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        sessions = []
        for name in (ENCODER_FILE, DECODER_FILE):
            if not (folder / name).is_file():
                raise KvaeError(f"{folder}: no {name}; run `kvae export RUN --out {folder}` first")
            sessions.append(onnxruntime.InferenceSession(str(folder / name), options,
                                                         providers=["CPUExecutionProvider"]))
        self.encoder, self.decoder = sessions
        meta = self.decoder.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise KvaeError(f"{folder}: {DECODER_FILE} is not a kvae export ({FORMAT})")
        self.metadata = dict(meta)
        self.sample_rate = int(meta["sample_rate"])
        self.window = int(meta["window"])
        self.hop = int(meta["hop"])
        self.latent_shape = tuple(json.loads(meta["latent_shape"]))

    def encode(self, x):
        """`(z_mean, z_scale)` of windows `(n, window)`."""
        return tuple(self.encoder.run(None, {"audio": np.asarray(x, np.float32)}))

    def decode(self, z):
        """Audio `(n, window)` of latents `(n, *latent_shape)`."""
        return self.decoder.run(None, {"z": np.asarray(z, np.float32)})[0]

    def reconstruct(self, x):
        """Windows `(n, window)` through the posterior mean, as `VAE.reconstruct`."""
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.window:
            raise KvaeError(f"reconstruct: expected windows of shape (n, {self.window}), got {x.shape}")
        return self.decode(self.encode(x)[0])


def tolerance(reference):
    """The agreement the tests and the benchmark ask of an exported graph: 1e-4 of the reference's peak."""
    return 1e-4 * float(np.max(np.abs(reference))) + 1e-7 if np.size(reference) else 0.0

