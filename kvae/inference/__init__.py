"""kvae.inference: using a trained model, from a `.keras` file or a run folder.

- `reconstruct`: `reconstruct_audio` (and `reconstruct_blocks`,
  `reconstruct_file`, streaming a file) of any length, window by window.
- `latents`: a model's latents as frames in time, encoded from and streamed
  back to long audio (`LatentLayout`, `FrameWindows`, `StreamDecoder`).
- `generation`: `generate`, long pieces streamed to WAV with or without a prior.
- `stream`: block-by-block `Encoder`, `Decoder` and `Reconstructor` with a
  stated latency (`kvae reconstruct --stream`).
- `onnx`: `OnnxVAE`, a model exported by `kvae export` run with onnxruntime
  (every function above takes it as it takes a Keras model).

Every path that puts windows back into a signal overlap-adds them with
`kvae.dsp.OverlapAdd`. Loading is `kvae.models.loading.load` (`kvae.load`).
"""

from kvae.models.loading import load
from kvae.inference.reconstruct import reconstruct_audio, reconstruct_blocks, reconstruct_file
from kvae.inference.latents import FrameWindows, LatentLayout, StreamDecoder
from kvae.inference.generation import generate
from kvae.inference.stream import Decoder, Encoder, Reconstructor, block_samples, reconstruct_file_streamed
from kvae.inference.onnx import OnnxVAE

__all__ = [
    "Decoder",
    "Encoder",
    "FrameWindows",
    "LatentLayout",
    "OnnxVAE",
    "Reconstructor",
    "StreamDecoder",
    "block_samples",
    "generate",
    "load",
    "reconstruct_audio",
    "reconstruct_blocks",
    "reconstruct_file",
    "reconstruct_file_streamed",
]
