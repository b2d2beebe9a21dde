"""Test audio, made in one place: music-like windows, sines, and the WAV files and trees the data tests read.

Test modules import it by name (`from audio import tones, tone_wav`): pytest puts tests/ on sys.path.
"""

import struct
from pathlib import Path

import numpy as np
from scipy.io import wavfile


# ---------------------------------------------------------------- signals


def tones(n=16, window=750, seed=0, rate=3000):
    """Windows of decaying harmonic tones, a stand-in for music: float32 `(n, window)`."""
    rng = np.random.default_rng(seed)
    t = np.arange(window) / rate
    f0 = rng.uniform(110, 440, size=(n, 1))
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3)) * np.exp(-3 * t)
    return (0.3 * x * rng.uniform(0.5, 1.0, size=(n, 1))).astype("float32")


def sine(freq, seconds, rate, amplitude=0.5, phase=0.0, dtype=np.float32):
    """`round(seconds * rate)` samples of `amplitude * sin(2 pi freq t + phase)`, shape `(samples,)`."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(dtype)


# ---------------------------------------------------------------- WAV files


def wav_file(path, samples, rate):
    """Write `samples` exactly as given (any dtype scipy writes, NaNs included); make the folder; return path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, samples)
    return path


def tone_wav(path, seconds=1.0, freq=220.0, rate=8000, amplitude=0.5):
    """A float32 WAV of one sine (see `sine`); return path."""
    return wav_file(path, sine(freq, seconds, rate, amplitude), rate)


def silent_wav(path, seconds=0.05, rate=8000):
    """A float32 WAV of zeros; return path."""
    return wav_file(path, np.zeros(int(seconds * rate), np.float32), rate)


def truncated_wav(path, keep=None, **tone):
    """A `tone_wav` cut to its first `keep` bytes (default: half the file); return path."""
    good = tone_wav(path, **tone).read_bytes()
    path.write_bytes(good[: len(good) // 2 if keep is None else keep])
    return path


def patched_wav(path, fmt_size=None, channels=None, **tone):
    """A `tone_wav` whose fmt chunk header is then overwritten: its size field and/or channel count; return path."""
    raw = bytearray(tone_wav(path, **tone).read_bytes())
    pos = raw.index(b"fmt ")
    if fmt_size is not None:
        raw[pos + 4:pos + 8] = struct.pack("<I", fmt_size)
    if channels is not None:
        raw[pos + 10:pos + 12] = struct.pack("<H", channels)
    path.write_bytes(bytes(raw))
    return path


def pcm24_wav(path, ints, rate):
    """Write a real 24-bit PCM WAV by hand: fmt chunk with 24 bits, 3-byte little-endian samples.

    Args:
        ints: integers in [-2**23, 2**23), shape `(frames,)` or `(frames, channels)`.
    """
    ints = np.asarray(ints, dtype=np.int64)
    if ints.ndim == 1:
        ints = ints[:, None]
    frames, channels = ints.shape
    assert ints.min() >= -(2**23) and ints.max() < 2**23
    block = 3 * channels
    data = bytearray()
    for v in ints.reshape(-1):
        data += int(v).to_bytes(3, "little", signed=True)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, 24)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + bytes(data)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


# ---------------------------------------------------------------- a MusicNet tree

# Verbatim from the real musicnet_metadata.csv (header and rows, quoting included).
METADATA_HEADER = '"id","composer","composition","movement","ensemble","source","transcriber","catalog_name","seconds"'
METADATA_ROWS = {
    "1727": '1727,"Schubert","Piano Quintet in A major","2. Andante","Piano Quintet","European Archive",'
            '"http://tirolmusic.blogspot.com/","OP114",447',
    "2186": '2186,"Bach","Violin Partita No 3 in E major","1. Preludio","Solo Violin","Oliver Colbentston",'
            '"suzumidi","BWV1006",214',
    "2532": '2532,"Beethoven","Piano Sonata No 20 in C minor","1. Maestoso - Allegro con brio ed appassionato",'
            '"Solo Piano","Neal O\u2019Doan","piano-midi.de","OP111",548',
    "1759": '1759,"Schubert","Piano Sonata in C minor","3. Menuetto and Trio","Solo Piano","Museopen",'
            '"Martin Charles Bucknall","D958",194',
    "2303": '2303,"Bach","WTK I, No. 5: Prelude and Fugue in D major","1. Prelude","Solo Piano","Kimiko Ishizaka",'
            '"www.bachcentral.com","BWV850",92',
    "2106": '2106,"Haydn","Quartet No 53 in D major","3. Menuetto: Allegretto","String Quartet","Museopen",'
            '"Andrew D. Lawson","OP64NO5",226',
}
LABEL_HEADER = "start_time,end_time,instrument,note,start_beat,end_beat,note_value"
LABEL_ROWS = ("9182,90078,43,53,4.0,1.5,Dotted Quarter", "9182,33758,42,65,4.0,0.5,Eighth",
              "33758,57822,1,69,4.5,0.25,Triplet Sixteenth")
TRAIN_IDS = ("1727", "2186", "2532")
TEST_IDS = ("1759", "2303")
MIDIS = {"2303": ("Bach", "prelude5"), "1727": ("Schubert", "quintet2")}


def write_musicnet(root, layout="original", train_ids=TRAIN_IDS, test_ids=TEST_IDS, metadata=True,
                   metadata_ids=None, seconds=0.1, rate=44100):
    """Write a faithful MusicNet tree: audio (float32 WAV), label CSVs, metadata CSV and MIDI files.

    Args:
        root: Path. The dataset root (created).
        layout: str. "original" (ROOT/musicnet/...) or "kaggle" (ROOT/musicnet/musicnet/...).
        metadata_ids: ids whose rows go into the metadata CSV; default all of METADATA_ROWS
            (the real file lists ids whose audio a partial download lacks).

    Returns:
        root.
    """
    root = Path(root)
    data = root / "musicnet" if layout == "original" else root / "musicnet" / "musicnet"
    midis = root / "musicnet_midis" if layout == "original" else root / "musicnet_midis" / "musicnet_midis"
    rng = np.random.default_rng(0)
    for split, ids in (("train", train_ids), ("test", test_ids)):
        (data / f"{split}_data").mkdir(parents=True, exist_ok=True)
        (data / f"{split}_labels").mkdir(parents=True, exist_ok=True)
        for i in ids:
            audio = (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
            wav_file(data / f"{split}_data" / f"{i}.wav", audio, rate)
            (data / f"{split}_labels" / f"{i}.csv").write_text("\n".join((LABEL_HEADER,) + LABEL_ROWS) + "\n")
    for i, (composer, slug) in MIDIS.items():
        (midis / composer).mkdir(parents=True, exist_ok=True)
        (midis / composer / f"{i}_{slug}.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0")
    if metadata:
        ids = metadata_ids if metadata_ids is not None else list(METADATA_ROWS)
        lines = [METADATA_HEADER] + [METADATA_ROWS[i] for i in ids]
        (root / "musicnet_metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
