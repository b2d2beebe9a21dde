"""Real-time factor of every preset: seconds of audio reconstructed per second of one CPU core.

Run on demand (it measures, it never asserts)::

    python benchmarks/rtf_benchmark.py                        # every preset, 10 s of audio each
    python benchmarks/rtf_benchmark.py --presets fc,rave-3k --seconds 30 --block-ms 5

For each preset in kvae/presets/configs/ the model is built untrained (speed
does not depend on the weights; N(0, 0.01) noise is added to them so that
zero-initialised layers do not make the ONNX comparison trivial), exported with `kvae.export.export_onnx`,
and a noise signal of `--seconds` (at least 4 windows) is reconstructed four
ways: offline (`reconstruct_audio`: windows at half-window hops, batches of
64) and streamed (`kvae.inference.stream.Reconstructor`, blocks of `--block-ms`), each
in Keras (torch backend, `torch.set_num_threads(1)`) and through
onnxruntime (`kvae.export.OnnxVAE`, `intra_op_num_threads=1`). A warm-up
call comes first. The figure is audio seconds / CPU seconds of this process
(`time.process_time`), so other load on the machine changes it little;
higher is faster, 1 is real time. `max err` is the largest difference
between the ONNX and the Keras offline outputs over the Keras output's peak
(n/a where the model does not export: the mel VAE). The load average is
printed at the start and the end. With `--out DIR` the report is also saved
as `DIR/rtf_benchmark.txt`.

Measured figures are in docs/guides/export.md, section "Real-time factor".
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py

from _common import Report, command_line, comma_list, fmt, load_line, machine_lines, table  # noqa: E402

from kvae import configure  # noqa: E402


def cpu_rtf(fn, seconds):
    """Audio seconds per CPU second of `fn()`, after one warm-up call."""
    fn()
    start = time.process_time()
    fn()
    return seconds / max(time.process_time() - start, 1e-9)


def streamed(model, signal, block):
    from kvae.inference.stream import Reconstructor

    stream = Reconstructor(model)
    for i in range(0, len(signal), block):
        stream.push(signal[i:i + block])
    stream.finish()


def measure(name, seconds, block_ms, work):
    import keras
    import numpy as np

    from kvae.config import load_config
    from kvae.errors import KvaeError
    from kvae.export import OnnxVAE, export_onnx
    from kvae.inference.stream import Reconstructor, block_samples
    from kvae.training import build_model
    from kvae.inference import reconstruct_audio

    model = build_model(load_config(name))
    rng = np.random.default_rng(0)
    for w in model.trainable_weights:  # zero-initialised layers (RAVE's last) would make the ONNX check trivial
        w.assign(keras.ops.convert_to_numpy(w) + rng.normal(0, 0.01, w.shape).astype(np.float32))
    length = max(int(seconds * model.sample_rate), 4 * model.window)
    audio_seconds = length / model.sample_rate
    signal = (0.1 * rng.standard_normal(length)).astype(np.float32)
    block = block_samples(block_ms, model.sample_rate)
    row = {"preset": name, "rate": model.sample_rate, "window": model.window,
           "latency_ms": Reconstructor(model).latency_ms, "seconds": audio_seconds}
    row["keras_offline"] = cpu_rtf(lambda: reconstruct_audio(model, signal), audio_seconds)
    row["keras_stream"] = cpu_rtf(lambda: streamed(model, signal, block), audio_seconds)
    try:
        export_onnx(model, work / name)
    except KvaeError as exc:
        row["onnx_note"] = str(exc)
        return row
    exported = OnnxVAE(work / name, threads=1)
    row["onnx_offline"] = cpu_rtf(lambda: reconstruct_audio(exported, signal), audio_seconds)
    row["onnx_stream"] = cpu_rtf(lambda: streamed(exported, signal, block), audio_seconds)
    want = reconstruct_audio(model, signal)
    row["error"] = float(np.abs(reconstruct_audio(exported, signal) - want).max() / max(np.abs(want).max(), 1e-12))
    return row


def main():
    configure()
    from kvae.presets import preset_names

    names = preset_names()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", type=lambda t: comma_list(parser, t, names, "--presets", "preset"),
                        default=names, help="comma-separated presets (default: all)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per preset (at least 4 windows)")
    parser.add_argument("--block-ms", type=float, default=10.0, help="block length of the streamed runs")
    parser.add_argument("--out", type=Path, help="also save the report in this folder")
    args = parser.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)

    import torch

    torch.set_num_threads(1)
    report = Report()
    report(command_line("rtf_benchmark.py"), *machine_lines(modules=("keras", "torch", "onnxruntime")),
           "torch threads: 1; onnxruntime intra-op threads: 1")
    report.section(f"Real-time factor: audio seconds per CPU second (blocks of {args.block_ms:g} ms when streamed)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kvae-rtf-") as work:
        for name in args.presets:
            row = measure(name, args.seconds, args.block_ms, Path(work))
            rows.append(row)
            print(f"  {name}: done ({load_line()})", flush=True)
    report(*table(
        ["preset", "rate", "window", "latency ms", "keras offline", "keras stream", "onnx offline", "onnx stream",
         "max err"],
        [[r["preset"], r["rate"], r["window"], fmt(r["latency_ms"], 0), fmt(r["keras_offline"]),
          fmt(r["keras_stream"]), fmt(r.get("onnx_offline")), fmt(r.get("onnx_stream")),
          f"{r['error']:.1e}" if "error" in r else "n/a"] for r in rows]))
    for r in rows:
        if "onnx_note" in r:
            report(f"{r['preset']}: {r['onnx_note'][:120]} ...")
    report.finish(args.out, "rtf_benchmark.txt")


if __name__ == "__main__":
    main()
