"""Loading a kvae model from a `.keras` file, with the archive checked before Keras reads it.

A `.keras` file is a zip archive (`config.json`, `metadata.json`,
`model.weights.h5`). Keras would unpack whatever it holds, so a hostile or
broken archive (a member padded to gigabytes that compresses to kilobytes,
a config of hundreds of megabytes, a header that declares less than its
member holds) is refused first, from the bytes each member unpacks to (read
streaming, with a cap), and so is a model too large to build, from its
config, before Keras builds anything. A file that is not a kvae model
(another Keras model, a newer file) gets one line saying what it is.
"""

import importlib
import json
import os
import re
import zipfile
import zlib
from pathlib import Path

from kvae.errors import KvaeError
from kvae.runs import RunFolder

MAX_CONFIG_BYTES = 16 * 2 ** 20  # config.json, metadata.json: a kvae model's are a few kB
MAX_WEIGHTS_BYTES = 4 * 2 ** 30  # the largest preset's weights are well under 100 MB
MAX_RATIO = 50  # float32 weights hardly compress; a member 50x its stored size is padding


def check_archive(path):
    """Refuse a `.keras` archive that is not one, whose members are too large to read safely, or whose model
    would not fit in memory; the sizes are those of the bytes each member unpacks to, not what it declares.

    Each member is unpacked once, streaming, `CHUNK` bytes at a time, and the
    reading stops at the first byte past its cap, so a member whose header
    lies (it declares kilobytes and streams gigabytes of padding after the
    real weights) costs no more memory than a chunk. The model `config.json`
    describes is then estimated (`kvae.resources.check_model_config`) before
    Keras builds it.

    Raises:
        KvaeError: not a zip archive, no `config.json`, a JSON member over
            `MAX_CONFIG_BYTES`, a member over `MAX_WEIGHTS_BYTES` or more than
            it declares, a large member that unpacks to more than `MAX_RATIO`
            times its stored size, or a model too large to build.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            names = {m.filename for m in members}
            if "config.json" not in names:  # the archive's own member (Keras's format), not a run folder's file
                raise KvaeError(f"{path}: not a Keras model archive (it has no config.json)")
            with open(path, "rb") as raw:
                config = [_member_size(path, archive, raw, m)[0] for m in members if m.filename == "config.json"]
                weights = None
                for m in members:
                    if m.filename != "config.json":
                        size = _member_size(path, archive, raw, m)[1]
                        weights = size if m.filename.endswith(".weights.h5") else weights
    except zipfile.BadZipFile:
        raise KvaeError(f"{path}: not a model file (a .keras file is a zip archive; this one is not)") from None
    except OSError as exc:
        raise KvaeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        saved = json.loads(config[0])
    except (ValueError, IndexError):
        return  # Keras says what is wrong with it
    from kvae.resources import check_model_config

    check_model_config(path, saved, weights)


CHUNK = 2 ** 20


def _member_size(path, archive, raw, m):
    """Unpack member `m` streaming, counting its bytes against its cap and its declaration: `(its bytes if it is
    JSON, its size)`."""
    cap = MAX_CONFIG_BYTES if m.filename.endswith(".json") else MAX_WEIGHTS_BYTES
    if m.file_size > cap:
        _too_large(path, m.filename, m.file_size, cap)
    if m.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        chunks = archive.open(m)  # bounded by the declared size, which is under the cap
        inflate, stream = None, iter(lambda: chunks.read(CHUNK), b"")
    else:
        raw.seek(m.header_offset)
        header = raw.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile
        raw.seek(m.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little"))
        left = m.compress_size
        inflate = zlib.decompressobj(-15) if m.compress_type == zipfile.ZIP_DEFLATED else None

        def stored():
            nonlocal left
            while left > 0:
                block = raw.read(min(CHUNK, left))
                if not block:
                    return
                left -= len(block)
                yield block
        stream = stored()
    size, kept, limit = 0, [], min(cap, m.file_size)
    for block in stream:
        pending = block
        while pending:
            out = inflate.decompress(pending, CHUNK) if inflate is not None else pending
            pending = inflate.unconsumed_tail if inflate is not None else b""
            size += len(out)
            if size > limit:
                if size > m.file_size:
                    raise KvaeError(f"{path}: its {m.filename} unpacks to more than the {m.file_size:,} bytes it "
                                    "declares (padding after its data); refusing to read it")
                _too_large(path, m.filename, size, cap)
            if size > 2 ** 20 and size > MAX_RATIO * max(m.compress_size, 1):
                raise KvaeError(f"{path}: its {m.filename} unpacks to over {size / 2**20:,.0f} MB from "
                                f"{m.compress_size / 2**20:,.2f} MB stored (padding, not weights); refusing to read it")
            if m.filename.endswith(".json"):
                kept.append(out)
            if inflate is not None and inflate.eof:
                break
    return b"".join(kept), size


def _too_large(path, name, size, cap):
    if name.endswith(".json"):
        raise KvaeError(f"{path}: its {name} is {size / 2**20:,.0f} MB, far more than a model's "
                        f"(at most {cap // 2**20} MB); refusing to read it")
    raise KvaeError(f"{path}: its {name} is {size / 2**30:,.1f} GB (at most {cap // 2**30} GB); refusing to read it")


def _reason(exc):
    """What went wrong, in words for one line: the first sentence of the message, no exception names."""
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError):
        return f"an entry it needs is missing ({text})"
    if not text:
        return "its contents are not a model this version of kvae can read"
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    if len(sentence) > 200:
        sentence = sentence[:200].rsplit(" ", 1)[0] + " ..."
    return sentence


LOAD_PRECISIONS = ("saved", "float32")


def load(path, compile=True, precision="saved"):
    """Load a kvae model from a `.keras` file or a run folder.

    Args:
        path: str or Path. A `.keras` file, or a run folder holding `model.keras`.
        compile: bool. Also restore the optimizer. Use False to load a model
            saved on another backend (its optimizer state is backend-specific),
            then `compile` it again.
        precision: str. `"saved"`: compute as the model was saved (a model
            trained under `mixed_bfloat16` computes in bfloat16, even where
            bfloat16 is emulated and slow). `"float32"`: every layer computes
            in float32 (the weights are float32 either way): the choice on a
            machine without bfloat16 matrix units
            (`kvae.training.precision.fast_bfloat16()` is False). Defaults to "saved".

    Returns:
        The model (a `kvae.models.VAE` subclass, or a `LatentPrior`).

    Raises:
        KvaeError: no such file; an archive that is not one or is too large
            to read safely (`check_archive`); a file Keras cannot load; a
            Keras model that is not a kvae model.
    """
    import keras

    importlib.import_module("kvae.models")  # registers the classes for deserialisation
    if precision not in LOAD_PRECISIONS:
        raise KvaeError(f"precision: must be one of {', '.join(LOAD_PRECISIONS)}, got {precision!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise KvaeError(f"path: expected a model.keras file or a run folder, got {path!r}")
    path = Path(path)
    if path.is_dir():
        path = RunFolder(path).model
    if not path.is_file():
        raise KvaeError(f"{path}: no such model file")
    check_archive(path)
    try:
        model = keras.models.load_model(path, compile=compile)
    except Exception as exc:  # keras raises many types for a bad archive
        raise KvaeError(f"{path}: cannot load this model: {_reason(exc)}") from None
    if not type(model).__module__.startswith("kvae."):
        raise KvaeError(f"{path}: a Keras model ({type(model).__name__}) but not a kvae model; "
                        "kvae reads the model.keras files kvae fit writes")
    if precision == "float32":
        from kvae._keras_private import nested_layers

        for layer in nested_layers(model):  # mixed policies hold float32 weights already
            if layer.dtype_policy.name != "float32":
                layer.dtype_policy = "float32"
    return model
