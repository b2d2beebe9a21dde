"""The embedded default dataset: a small synthetic corpus laid out like MusicNet.

MusicNet (330 recordings, about 11 GB) is a large download. So that every
command, example and test also runs offline, kvae can *generate* a small
stand-in instead: a few recordings of polyphonic, classical-style music,
written in MusicNet's original release layout::

    ROOT/musicnet/train_data/<id>.wav      ROOT/musicnet/train_labels/<id>.csv
    ROOT/musicnet/test_data/<id>.wav       ROOT/musicnet/test_labels/<id>.csv
    ROOT/musicnet_metadata.csv

Each recording picks a key (major or harmonic minor), a metre (4/4 or 3/4), a
tempo of 72-132 bpm and one of MusicNet's ensembles (Solo Piano, String
Quartet, Accompanied Violin, ...). A chord progression (I-IV-V-I, I-vi-IV-V,
i-iv-V-i, ...) drives a bass line, block or broken chords (or sustained inner
voices), and a mostly stepwise melody with varied rhythms and rests. One
phrase ends in a two-beat general pause (near-silence), and the last two bars
are a V-I cadence.

Notes are rendered by additive synthesis, one spectrum and envelope per
instrument: piano and harpsichord are struck, slightly inharmonic, and their
upper partials die away first; bowed strings have a sawtooth-like spectrum
shaped by body resonances, a slow attack and delayed 5-6 Hz vibrato; the
clarinet has mostly odd harmonics; flute and oboe have few harmonics and a
little breath noise; horn and bassoon are mellow. Partials stay below 10 kHz
and fundamentals lie between 65 Hz and 1.4 kHz. The mix goes through a short
synthetic room and is peak-normalised to 0.55-0.75.

Files follow MusicNet's conventions: WAVs are mono, 44.1 kHz, 32-bit IEEE
float; each label row is one note actually rendered (onset and offset as
sample indices, 1-based General MIDI program, MIDI pitch, beat position,
length in beats and note value); the metadata CSV quotes its text fields.

The corpus is fully determined by its seed and takes a few seconds to build;
`embedded_root` builds it once and caches it under ``kvae_home()/embedded``.
"""

from kvae.data.embedded.synthesis import INSTRUMENTS, MAX_PARTIAL_HZ
from kvae.data.embedded.writer import EMBEDDED_VERSION, FIRST_ID, MARKER_FILE, embedded_root, generate_corpus
from kvae.data.sources import LABEL_COLUMNS as LABEL_HEADER
from kvae.data.sources import METADATA_COLUMNS as METADATA_HEADER
from kvae.data.sources import METADATA_FILE

__all__ = [
    "EMBEDDED_VERSION", "FIRST_ID", "INSTRUMENTS", "LABEL_HEADER", "MARKER_FILE", "MAX_PARTIAL_HZ",
    "METADATA_FILE", "METADATA_HEADER", "embedded_root", "generate_corpus",
]
