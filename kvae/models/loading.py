"""Loading a kvae model from a `.keras` file, with the archive checked before Keras reads it.

A `.keras` file is a zip archive (`config.json`, `metadata.json`,
`model.weights.h5`). Keras would unpack whatever it holds, so a hostile or
broken archive (a member padded to gigabytes that compresses to kilobytes,
a config of hundreds of megabytes) is refused first, from the sizes the
archive declares, before any of it is read. A file that is not a kvae model
(another Keras model, a newer file) gets one line saying what it is.
"""

import importlib
import re
import zipfile
from pathlib import Path

from kvae.errors import KvaeError
from kvae.runs import RunFolder

MAX_CONFIG_BYTES = 16 * 2 ** 20  # config.json, metadata.json: a kvae model's are a few kB
MAX_WEIGHTS_BYTES = 4 * 2 ** 30  # the largest preset's weights are well under 100 MB
MAX_RATIO = 50  # float32 weights hardly compress; a member 50x its stored size is padding


def check_archive(path):
    """Refuse a `.keras` archive that is not one, or whose members are too large to read safely.

    Raises:
        KvaeError: not a zip archive, no `config.json`, a JSON member over
            `MAX_CONFIG_BYTES`, a member over `MAX_WEIGHTS_BYTES`, or a large
            member that unpacks to more than `MAX_RATIO` times its stored size.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile:
        raise KvaeError(f"{path}: not a model file (a .keras file is a zip archive; this one is not)") from None
    except OSError as exc:
        raise KvaeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    names = {m.filename for m in members}
    if "config.json" not in names:  # the archive's own member (Keras's format), not a run folder's file
        raise KvaeError(f"{path}: not a Keras model archive (it has no config.json)")
    for m in members:
        if m.filename.endswith(".json") and m.file_size > MAX_CONFIG_BYTES:
            raise KvaeError(f"{path}: its {m.filename} is {m.file_size / 2**20:,.0f} MB, far more than a model's "
                            f"(at most {MAX_CONFIG_BYTES // 2**20} MB); refusing to read it")
        if m.file_size > MAX_WEIGHTS_BYTES:
            raise KvaeError(f"{path}: its {m.filename} is {m.file_size / 2**30:,.1f} GB "
                            f"(at most {MAX_WEIGHTS_BYTES // 2**30} GB); refusing to read it")
        if m.file_size > 2 ** 20 and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise KvaeError(f"{path}: its {m.filename} unpacks to {m.file_size / 2**20:,.0f} MB from "
                            f"{m.compress_size / 2**20:,.2f} MB stored (padding, not weights); refusing to read it")


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


def load(path, compile=True):
    """Load a kvae model from a `.keras` file or a run folder.

    Args:
        path: str or Path. A `.keras` file, or a run folder holding `model.keras`.
        compile: bool. Also restore the optimizer. Use False to load a model
            saved on another backend (its optimizer state is backend-specific),
            then `compile` it again.

    Returns:
        The model (a `kvae.models.VAE` subclass, or a `LatentPrior`).

    Raises:
        KvaeError: no such file; an archive that is not one or is too large
            to read safely (`check_archive`); a file Keras cannot load; a
            Keras model that is not a kvae model.
    """
    import keras

    importlib.import_module("kvae.models")  # registers the classes for deserialisation
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
    return model
