"""The pretrained columns of `kvae evaluate`: is the rebuilt musicnn the original network, and what does each column cost?

1. musicnn: kvae's rebuild (`kvae.evaluation.music_embedding`, keras.ops on the
   current backend) against the checkpoint's own TensorFlow 1 training graph
   (`musicnn/MTT_musicnn/.meta`, run in `tf.compat.v1` with its variables
   turned into constants and the gradient ops pruned), on the same log-mel
   input: the largest difference of the 200-d penultimate layer and of the
   50 tag probabilities, at 187 frames (3 s, the trained length) and 63 (1 s
   at 3000 Hz), and each one's top tags for a piano-like tone and for white
   noise. With `librosa` importable, also the input: kvae's Slaney filter
   bank and log-mel against librosa's (musicnn computed its input with
   librosa, reflect padding).
2. Cost, on one core: ViSQOL for the rows of a reconstruction table
   (reconstructions, the seven ladder rows, silence, white noise: 64 of 256
   one-second windows each, as `kvae evaluate` scores them) and the music
   network's embeddings of 256 one-second clips (`kvae evaluate` embeds the
   reference set and 7 rows: 8 times that).

    python benchmarks/pretrained_columns.py            # both
    python benchmarks/pretrained_columns.py --no-cost  # the check only (a few seconds)

Needs `pip install "kvae[eval]" && pip install --no-deps musicnn==0.1.0`.
Run on demand; it trains nothing.
"""

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
RATE = 3000


def original_graph():
    """A `tf.compat.v1` session on the checkpoint's own graph (outputs: tags, penultimate) and its input names."""
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.python.training import py_checkpoint_reader

    from kvae.evaluation import music_embedding as me

    prefix = me.checkpoint_prefix()
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(Path(prefix + ".meta").read_bytes())
    outputs = ["model/Sigmoid", "model/batch_normalization_10/batchnorm/add_1"]
    pruned = tf.compat.v1.graph_util.extract_sub_graph(meta.graph_def, outputs)  # no gradients, no optimizer
    reader = py_checkpoint_reader.NewCheckpointReader(prefix)
    graph_def = tf.compat.v1.GraphDef()
    for node in pruned.node:
        if node.op in ("VariableV2", "Variable"):  # the trained value, as a constant
            const = graph_def.node.add()
            const.name, const.op = node.name, "Const"
            value = reader.get_tensor(node.name)
            const.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
            const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
            continue
        copy = graph_def.node.add()
        copy.CopyFrom(node)
        copy.attr.pop("_output_shapes", None)  # stale shapes of the training graph
        if copy.name == "model/Placeholder":  # the input was fixed at 187 frames; any length is fine
            copy.attr["shape"].shape.dim[1].size = -1
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    return tf.compat.v1.Session(graph=graph), [name + ":0" for name in outputs]


def check():
    import numpy as np
    from keras import ops

    from kvae.evaluation import music_embedding as me

    session, outputs = original_graph()
    t = np.arange(3 * RATE) / RATE
    piano = sum(0.3 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 6)) * np.exp(-2 * (t % 0.5))
    clips = np.stack([piano, 0.1 * np.random.default_rng(0).standard_normal(3 * RATE)])
    mel = me.log_mel(clips, RATE)
    for frames in (me.PATCH_FRAMES, 63):
        x = mel[:, :frames]
        tags_tf, pen_tf = session.run(outputs, {"model/Placeholder:0": x, "model/Placeholder_2:0": False})
        pen, logits = me.forward(x)
        pen, tags = ops.convert_to_numpy(pen), ops.convert_to_numpy(ops.sigmoid(logits))
        print(f"{frames} frames: penultimate max |difference| {np.abs(pen - pen_tf).max():.2e} "
              f"(values up to {np.abs(pen_tf).max():.2f}); tags {np.abs(tags - tags_tf).max():.2e}")
        for i, name in enumerate(("piano-like tone", "white noise")):
            for label, row in (("original", tags_tf[i]), ("rebuild ", tags[i])):
                top = ", ".join(f"{me.TAGS[j]} {row[j]:.3f}" for j in np.argsort(-row)[:5])
                print(f"  {name:15s} {label}: {top}")
    try:
        import librosa
    except ImportError:
        print("librosa not importable: input check skipped")
        return
    from scipy.signal import resample_poly

    bank = librosa.filters.mel(sr=me.MODEL_RATE, n_fft=me.N_FFT, n_mels=me.N_MELS)
    print(f"Slaney filter bank against librosa's: max |difference| {np.abs(bank - me.slaney_mel_filterbank()).max():.1e}")
    audio = resample_poly(clips[:, :RATE], 16, 3, axis=-1)
    theirs = np.stack([librosa.feature.melspectrogram(y=a, sr=me.MODEL_RATE, hop_length=me.HOP, n_fft=me.N_FFT,
                                                      n_mels=me.N_MELS, pad_mode="reflect").T for a in audio])
    theirs = np.log10(10000 * theirs.astype(np.float16) + 1)
    print(f"log-mel against librosa's (reflect padding): max |difference| {np.abs(theirs - me.log_mel(clips[:, :RATE], RATE)).max():.1e}")


def cost(n=256):
    import numpy as np

    from kvae.data import prepare
    from kvae.evaluation import ladder, music_embedding, references, visqol
    from kvae.evaluation.evaluate import windows

    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; OMP_NUM_THREADS "
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    test, _ = windows(prepare(None, sample_rate=RATE), "test", RATE, n, random=False)
    rows = {"copy": test, **{k: v for k, (v, _) in ladder.ladder_rows(test, RATE).items() if v is not None},
            "silence": np.zeros_like(test), "white noise": references.white_noise_like(test)}
    visqol.scores(test[:1], test[:1], RATE)  # numba's compilation (cached after the first run)
    start = time.perf_counter()
    for name, clips in rows.items():
        begin = time.perf_counter()
        columns = visqol.visqol_columns(test, clips, RATE)
        mos = "-" if columns["visqol"] is None else f"{columns['visqol']:.2f}"
        print(f"  ViSQOL {name:34s} {mos:>5s}  ({columns['visqol_clips']} windows, {time.perf_counter() - begin:.1f} s)")
    print(f"ViSQOL: {time.perf_counter() - start:.0f} s for {len(rows)} rows of {len(visqol.subset(n))} of {n} windows")
    music_embedding.embeddings(test[:2], RATE)  # load the checkpoint
    start = time.perf_counter()
    music_embedding.embeddings(test, RATE)
    print(f"musicnn: {time.perf_counter() - start:.1f} s to embed {n} clips (kvae evaluate embeds 8 such sets)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-cost", action="store_true", help="only check the rebuild against the original graph")
    parser.add_argument("-n", type=int, default=256, help="held-out windows for the cost (default 256)")
    args = parser.parse_args(argv)
    from kvae._env import configure

    configure()
    check()
    if not args.no_cost:
        cost(args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
