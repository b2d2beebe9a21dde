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

import csv
import functools
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal
from scipy.io import wavfile

from kvae.errors import KvaeError
from kvae.paths import kvae_home

EMBEDDED_VERSION = 1

FIRST_ID = 9000
MARKER_FILE = ".complete"
METADATA_FILE = "musicnet_metadata.csv"
LABEL_HEADER = ("start_time", "end_time", "instrument", "note", "start_beat", "end_beat", "note_value")
METADATA_HEADER = (
    "id", "composer", "composition", "movement", "ensemble",
    "source", "transcriber", "catalog_name", "seconds",
)

MAX_PARTIAL_HZ = 10_000.0  # no partial is rendered above this
_LEAD_IN_S = 0.25          # silence before the first note
_TAIL_S = 0.75             # room after the last note-off for releases and reverb
_PAUSE_BEATS = 2           # length of the general pause (all voices rest)
_PHRASE_BARS = 4

# --------------------------------------------------------------------------- keys and harmony

_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 11)}  # minor: harmonic
_KEY_NAMES = {
    "major": ("C", "D-flat", "D", "E-flat", "E", "F", "F-sharp", "G", "A-flat", "A", "B-flat", "B"),
    "minor": ("C", "C-sharp", "D", "E-flat", "E", "F", "F-sharp", "G", "G-sharp", "A", "B-flat", "B"),
}
# Chord roots as scale steps (0 = tonic), one chord a bar.
_PROGRESSIONS = {
    "major": ((0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 1, 4), (0, 5, 1, 4),
              (0, 4, 5, 3, 0, 3, 4, 0), (0, 4, 5, 2, 3, 0, 3, 4)),
    "minor": ((0, 3, 4, 0), (0, 5, 3, 4), (0, 5, 1, 4), (0, 3, 0, 4),
              (0, 4, 5, 3, 0, 3, 4, 0)),
}


@dataclass(frozen=True)
class _Key:
    """A key: tonic pitch class (0 = C) and mode; maps scale degrees to MIDI pitches."""

    tonic: int
    mode: str

    @property
    def name(self):
        return f"{_KEY_NAMES[self.mode][self.tonic]} {self.mode}"

    def pitch(self, degree):
        """MIDI pitch of a scale degree counted from the tonic in MIDI octave 0 (C0 = 12)."""
        octave, step = divmod(degree, 7)
        return 12 + self.tonic + 12 * octave + _SCALES[self.mode][step]

    def nearest_degree(self, step, target):
        """The degree of scale step `step` (mod 7) whose pitch is nearest `target`."""
        base = step % 7
        octave = round((target - self.pitch(base)) / 12)
        candidates = [base + 7 * (octave + shift) for shift in (-1, 0, 1)]
        return min(candidates, key=lambda d: (abs(self.pitch(d) - target), d))


def _chord_steps(root, seventh=False):
    """Scale steps of the triad (or seventh chord) on `root`, root first."""
    steps = [root % 7, (root + 2) % 7, (root + 4) % 7]
    if seventh:
        steps.append((root + 6) % 7)
    return tuple(steps)


@dataclass
class _Plan:
    """The score-level choices of one recording."""

    key: _Key
    meter: int           # beats per bar (quarter-note beats)
    bpm: float
    n_bars: int
    chords: list         # per bar: tuple of scale steps, root first
    pause: tuple = None  # (start_beat, end_beat) of the general pause, or None

    def is_phrase_end(self, bar):
        return bar % _PHRASE_BARS == _PHRASE_BARS - 1


def _make_plan(rng, seconds):
    """Pick key, metre, tempo, progression and general pause so whole bars fill the piece."""
    key = _Key(int(rng.integers(12)), str(rng.choice(("major", "minor"), p=(0.6, 0.4))))
    meter = int(rng.choice((4, 3), p=(0.7, 0.3)))
    usable = seconds - _LEAD_IN_S - _TAIL_S
    bars = usable * float(rng.uniform(72, 132)) / 60 / meter
    fewest, most = int(np.ceil(usable * 72 / 60 / meter)), int(np.floor(usable * 132 / 60 / meter))
    n_bars = int(np.clip(round(bars), fewest, most)) if fewest <= most else round(bars)
    n_bars = max(n_bars, 1)
    bpm = n_bars * meter * 60 / usable  # the exact tempo that ends on the last bar line

    progression = _PROGRESSIONS[key.mode][rng.integers(len(_PROGRESSIONS[key.mode]))]
    roots = [progression[bar % len(progression)] for bar in range(n_bars)]
    if n_bars >= 2:
        roots[-2] = 4  # authentic cadence V-I
    roots[-1] = 0
    chords = [_chord_steps(r, seventh=(r == 4 and rng.random() < 0.4)) for r in roots]

    candidates = [b for b in range(n_bars - 1) if b % _PHRASE_BARS == _PHRASE_BARS - 1]
    if not candidates and n_bars >= 2:
        candidates = [n_bars - 2]
    pause = None
    if candidates:
        bar_end = (int(rng.choice(candidates)) + 1) * meter
        pause = (bar_end - _PAUSE_BEATS, bar_end)
    return _Plan(key, meter, bpm, n_bars, chords, pause)


# --------------------------------------------------------------------------- ensembles and parts

@dataclass(frozen=True)
class _Part:
    """One voice of an ensemble: what it plays, on which instrument, in which range."""

    role: str         # "melody", "bass", "chords", "inner" or "figure"
    programs: tuple   # General MIDI programs to choose from (same tuple -> same choice)
    low: int          # MIDI range
    high: int
    gain: float


_ENSEMBLES = {
    "Solo Piano": (
        _Part("melody", (1,), 64, 86, 1.0), _Part("bass", (1,), 36, 55, 0.75),
        _Part("chords", (1,), 52, 71, 0.5)),
    "String Quartet": (
        _Part("melody", (41,), 64, 88, 1.0), _Part("bass", (43,), 36, 55, 0.8),
        _Part("inner", (41,), 60, 76, 0.6), _Part("inner", (42,), 53, 69, 0.6)),
    "Accompanied Violin": (
        _Part("melody", (41,), 64, 88, 1.0), _Part("bass", (1, 7), 36, 55, 0.7),
        _Part("chords", (1, 7), 52, 71, 0.45)),
    "Accompanied Cello": (
        _Part("melody", (43,), 50, 74, 1.0), _Part("bass", (1,), 36, 52, 0.7),
        _Part("chords", (1,), 55, 74, 0.45)),
    "Accompanied Clarinet": (
        _Part("melody", (72,), 60, 84, 1.0), _Part("bass", (1,), 36, 55, 0.7),
        _Part("chords", (1,), 52, 71, 0.45)),
    "Wind Quintet": (
        _Part("melody", (74, 69), 67, 88, 1.0), _Part("bass", (71,), 36, 55, 0.8),
        _Part("inner", (72,), 58, 74, 0.6), _Part("inner", (61,), 50, 67, 0.6)),
    "Solo Cello": (
        _Part("bass", (43,), 36, 50, 0.8), _Part("figure", (43,), 50, 74, 0.8)),
}
_FORMS = {
    "Solo Piano": "Piano Sonatina", "String Quartet": "String Quartet",
    "Accompanied Violin": "Violin Sonata", "Accompanied Cello": "Cello Sonata",
    "Accompanied Clarinet": "Clarinet Sonata", "Wind Quintet": "Wind Quintet",
    "Solo Cello": "Cello Suite",
}
_COMPOSERS = ("Kvae Synth", "Johann Additiv", "Clara Oszillator")


@dataclass(frozen=True)
class _Note:
    """One note of the score; beats are quarter notes counted from the first bar line."""

    start_beat: float
    beats: float
    program: int
    pitch: int
    velocity: float

    @property
    def end_beat(self):
        return self.start_beat + self.beats


def _velocity(rng, part, accent):
    return float(np.clip(part.gain * (0.85 + 0.12 * accent + 0.05 * rng.standard_normal()), 0.1, 1.2))


# Rhythms are lengths in beats; a negative length is a rest.
_MELODY_RHYTHMS = {
    4: ((1, 1, 1, 1), (0.5, 0.5, 1, 1, 1), (1.5, 0.5, 1, 1), (2, 1, 1), (1, 0.5, 0.5, 2),
        (0.25, 0.25, 0.5, 1, 2), (1, 1, 2), (0.5, 0.5, 0.5, 0.5, 1, 1), (0.75, 0.25, 1, 1, 1),
        (1, -1, 1, 1), (2, -0.5, 0.5, 1), (3, 1), (-0.5, 0.5, 1, 1, 1)),
    3: ((1, 1, 1), (2, 1), (1.5, 0.5, 1), (0.5, 0.5, 1, 1), (0.75, 0.25, 1, 1), (1, -1, 1),
        (0.5, 0.5, 0.5, 0.5, 1), (-1, 1, 1), (0.25, 0.25, 0.5, 2)),
}
_CADENCE_RHYTHMS = {4: ((2, 2), (1, 1, 2), (3, -1), (2, -2)), 3: ((2, 1), (3,), (2, -1), (1, 2))}
_MELODY_STEPS = (-4, -3, -2, -1, 0, 1, 2, 3, 4)
_MELODY_STEP_P = (0.01, 0.04, 0.12, 0.30, 0.06, 0.30, 0.12, 0.04, 0.01)

# Bass patterns: (beats, scale steps above the chord root); negative beats rest.
_BASS_PATTERNS = {
    4: (((4, 0),), ((2, 0), (2, 4)), ((1, 0), (1, 2), (1, 4), (1, 2)),
        ((1, 0), (1, 7), (1, 0), (1, 7)), ((1, 0), (-1, 0), (1, 4), (-1, 0))),
    3: (((3, 0),), ((1, 0), (-2, 0)), ((2, 0), (1, 4)), ((1, 0), (1, 2), (1, 4))),
}
_BLOCK_RHYTHMS = {4: ((2, 2), (4,), (1, 1, 1, 1), (-1, 1, 1, 1), (3, 1)),
                  3: ((-1, 1, 1), (3,), (1, 1, 1), (2, 1))}
_ALBERTI = {4: (0, 2, 1, 2, 0, 2, 1, 2), 3: (0, 2, 1, 2, 1, 2)}   # indices into a 3-note voicing
_FIGURE = {4: (0, 1, 2, 3, 4, 3, 2, 1), 3: (0, 1, 2, 3, 2, 1)}     # indices into a chord ladder


def _in_range(key, degree, part):
    return part.low <= key.pitch(degree) <= part.high


def _melody_part(rng, plan, part, program):
    """A mostly stepwise melody; strong beats land on chord tones, phrases end on long notes."""
    key, center = plan.key, (part.low + part.high) / 2
    degree = key.nearest_degree(plan.chords[0][0], center)
    notes, first = [], True
    for bar, chord in enumerate(plan.chords):
        if bar == plan.n_bars - 1:
            rhythm = (plan.meter,)
        elif plan.is_phrase_end(bar):
            rhythm = _CADENCE_RHYTHMS[plan.meter][rng.integers(len(_CADENCE_RHYTHMS[plan.meter]))]
        else:
            rhythm = _MELODY_RHYTHMS[plan.meter][rng.integers(len(_MELODY_RHYTHMS[plan.meter]))]
        beat = bar * plan.meter
        for length in rhythm:
            if length < 0:
                beat -= length
                continue
            if not first:
                degree = _next_degree(rng, key, degree, part, center)
            first = False
            downbeat = beat % plan.meter == 0
            if bar == plan.n_bars - 1:
                degree = key.nearest_degree(0, key.pitch(degree))  # end on the tonic
            elif downbeat or length >= 2:
                degree = _snap_to_chord(rng, key, degree, chord, part)
            notes.append(_Note(beat, length, program, key.pitch(degree),
                               _velocity(rng, part, accent=downbeat)))
            beat += length
    return notes


def _next_degree(rng, key, degree, part, center):
    step = int(rng.choice(_MELODY_STEPS, p=_MELODY_STEP_P))
    if abs(key.pitch(degree) - center) > 7 and (key.pitch(degree) > center) == (step > 0):
        step = -step if rng.random() < 0.6 else step  # drift back towards the middle
    if not _in_range(key, degree + step, part):
        step = -step
    return degree + step if _in_range(key, degree + step, part) else degree


def _snap_to_chord(rng, key, degree, chord, part):
    order = (0, -1, 1, -2, 2, -3, 3) if rng.random() < 0.5 else (0, 1, -1, 2, -2, 3, -3)
    for shift in order:
        if (degree + shift) % 7 in chord and _in_range(key, degree + shift, part):
            return degree + shift
    return degree


def _bass_part(rng, plan, part, program):
    """Chord roots (and fifths, thirds, octaves) in one pattern; the last bar holds the tonic."""
    key, patterns = plan.key, _BASS_PATTERNS[plan.meter]
    pattern = patterns[rng.integers(len(patterns))]
    notes = []
    for bar, chord in enumerate(plan.chords):
        root = key.nearest_degree(chord[0], part.low + 6)
        while key.pitch(root) < part.low:
            root += 7
        beat = bar * plan.meter
        for length, above in (((plan.meter, 0),) if bar == plan.n_bars - 1 else pattern):
            if length < 0:
                beat -= length
                continue
            degree = root + above
            if key.pitch(degree) > part.high:
                degree -= 7
            notes.append(_Note(beat, length, program, key.pitch(degree),
                               _velocity(rng, part, accent=beat % plan.meter == 0)))
            beat += length
    return notes


def _voicing(key, chord, center):
    """Close-position chord: each chord tone at its pitch nearest `center`, low to high."""
    return sorted(key.pitch(key.nearest_degree(step, center)) for step in chord)


def _chords_part(rng, plan, part, program):
    """Keyboard accompaniment: block chords in one rhythm, or an Alberti-style broken chord."""
    key, meter = plan.key, plan.meter
    alberti = rng.random() < 0.5
    rhythm = _BLOCK_RHYTHMS[meter][rng.integers(len(_BLOCK_RHYTHMS[meter]))]
    notes = []
    for bar, chord in enumerate(plan.chords):
        voicing = _voicing(key, chord, (part.low + part.high) / 2 + rng.uniform(-2, 2))
        beat = bar * meter
        if bar == plan.n_bars - 1:
            for pitch in voicing:
                notes.append(_Note(beat, meter, program, pitch, _velocity(rng, part, accent=True)))
        elif alberti:
            for i, index in enumerate(_ALBERTI[meter]):
                notes.append(_Note(beat + 0.5 * i, 0.5, program, voicing[index],
                                   _velocity(rng, part, accent=i == 0)))
        else:
            for length in rhythm:
                if length > 0:
                    for pitch in voicing:
                        notes.append(_Note(beat, length, program, pitch,
                                           _velocity(rng, part, accent=beat % meter == 0)))
                beat += abs(length)
    return notes


def _inner_parts(rng, plan, parts, programs):
    """Sustained inner voices (e.g. second violin and viola) holding distinct chord tones."""
    key, meter = plan.key, plan.meter
    previous = [(p.low + p.high) / 2 for p in parts]
    notes = []
    for bar, chord in enumerate(plan.chords):
        rhythm = (meter,) if bar == plan.n_bars - 1 or rng.random() < 0.7 else (2, meter - 2)
        taken = set()
        for v, (part, program) in enumerate(zip(parts, programs)):
            span = range(key.nearest_degree(0, part.low) - 7, key.nearest_degree(0, part.high) + 8)
            options = [d for d in span if d % 7 in chord and _in_range(key, d, part)]
            free = [d for d in options if d % 7 not in taken] or options
            degree = min(free, key=lambda d: (abs(key.pitch(d) - previous[v]), d))
            taken.add(degree % 7)
            previous[v] = key.pitch(degree)
            beat = bar * meter
            for length in rhythm:
                notes.append(_Note(beat, length, program, key.pitch(degree),
                                   _velocity(rng, part, accent=beat % meter == 0)))
                beat += length
    return notes


def _figure_part(rng, plan, part, program):
    """Broken-chord figuration in eighths, rising and falling over the chord (cello-suite style)."""
    key, meter = plan.key, plan.meter
    notes = []
    for bar, chord in enumerate(plan.chords):
        root = key.nearest_degree(chord[0], part.low + 6)
        while key.pitch(root) < part.low:
            root += 7
        ladder = [key.pitch(d) for d in range(root, root + 11) if d % 7 in chord][:5]
        beat = bar * meter
        if bar == plan.n_bars - 1:
            notes.append(_Note(beat, meter, program, ladder[2], _velocity(rng, part, accent=True)))
            continue
        for i, index in enumerate(_FIGURE[meter]):
            notes.append(_Note(beat + 0.5 * i, 0.5, program, ladder[index],
                               _velocity(rng, part, accent=i == 0)))
    return notes


def _compose(rng, plan, ensemble):
    """All notes of a recording, with the general pause cut out and unison clashes removed."""
    parts = _ENSEMBLES[ensemble]
    chosen = {}
    programs = [chosen.setdefault(p.programs, int(rng.choice(p.programs))) for p in parts]
    notes = []
    inner = [(p, prog) for p, prog in zip(parts, programs) if p.role == "inner"]
    for part, program in zip(parts, programs):
        if part.role == "melody":
            notes += _melody_part(rng, plan, part, program)
        elif part.role == "bass":
            notes += _bass_part(rng, plan, part, program)
        elif part.role == "chords":
            notes += _chords_part(rng, plan, part, program)
        elif part.role == "figure":
            notes += _figure_part(rng, plan, part, program)
    if inner:
        notes += _inner_parts(rng, plan, *zip(*inner))
    return _drop_clashes(_cut_pause(notes, plan.pause))


def _cut_pause(notes, pause):
    """Silence every voice during the general pause: drop notes in it, shorten notes into it."""
    if pause is None:
        return notes
    start, end = pause
    kept = []
    for note in notes:
        if start <= note.start_beat < end:
            continue
        if note.start_beat < start < note.end_beat:
            note = _Note(note.start_beat, start - note.start_beat, note.program, note.pitch, note.velocity)
        kept.append(note)
    return kept


def _drop_clashes(notes):
    """Keep one of any notes with the same instrument and pitch that overlap (earlier parts win)."""
    busy, kept = {}, []
    for note in notes:
        spans = busy.setdefault((note.program, note.pitch), [])
        if any(s < note.end_beat and note.start_beat < e for s, e in spans):
            continue
        spans.append((note.start_beat, note.end_beat))
        kept.append(note)
    return kept


_SIMPLE_VALUES = ((4.0, "Whole"), (2.0, "Half"), (1.0, "Quarter"), (0.5, "Eighth"), (0.25, "Sixteenth"))
_NOTE_VALUES = dict(_SIMPLE_VALUES) | {
    6.0: "Dotted Whole", 3.0: "Dotted Half", 1.5: "Dotted Quarter", 0.75: "Dotted Eighth",
    3.5: "Double Dotted Half", 1.75: "Double Dotted Quarter",
}


def _note_value(beats):
    """MusicNet's name for a length in beats, e.g. ``Dotted Quarter`` or ``Tied Half-Eighth``."""
    if beats in _NOTE_VALUES:
        return _NOTE_VALUES[beats]
    names, left = [], beats
    for length, name in _SIMPLE_VALUES:
        while left >= length - 1e-9:
            names.append(name)
            left -= length
    return "Tied " + "-".join(names)


# --------------------------------------------------------------------------- instrument timbres

@dataclass(frozen=True)
class _Timbre:
    """How one instrument sounds: its harmonic spectrum, envelope and pitch wobble."""

    name: str
    spectrum: tuple = ()          # explicit harmonic amplitudes; empty: k ** -rolloff
    rolloff: float = 1.0
    max_partials: int = 16
    formants: tuple = ()          # body resonances: (centre Hz, width in octaves, gain)
    struck: bool = False          # struck or plucked string: free exponential decay
    strike_point: float = 0.0     # where the string is struck, as a fraction of its length
    ring_decay: float = 0.0       # struck: decay rate (1/s) of the fundamental at middle C
    partial_damping: float = 0.0  # struck: partial k decays (1 + partial_damping * (k - 1)) times faster
    inharmonicity: float = 0.0    # partial k at k * f0 * sqrt(1 + B k^2)
    attack: float = 0.01          # seconds
    decay: float = 0.1            # seconds, towards the sustain level
    sustain: float = 1.0
    release: float = 0.1          # seconds after the note-off
    vibrato_hz: float = 0.0
    vibrato_depth: float = 0.0    # fraction of the frequency
    noise: float = 0.0            # breath or bow noise, relative to the tone
    loudness: float = 1.0


_TIMBRES = {
    1: _Timbre("piano", rolloff=1.0, max_partials=14, struck=True, strike_point=1 / 7,
               ring_decay=0.8, partial_damping=0.3, inharmonicity=2.5e-4,
               attack=0.004, release=0.12),
    7: _Timbre("harpsichord", rolloff=0.6, max_partials=18, formants=((1800, 1.0, 0.6),),
               struck=True, strike_point=0.13, ring_decay=1.0, partial_damping=0.12,
               inharmonicity=4e-5, attack=0.002, release=0.06, loudness=0.8),
    41: _Timbre("violin", rolloff=1.0, max_partials=18,
                formants=((280, 0.5, 1.5), (480, 0.4, 1.0), (2800, 0.7, 2.0)),
                attack=0.07, decay=0.12, sustain=0.8, release=0.14,
                vibrato_hz=5.7, vibrato_depth=0.0045, noise=0.008),
    42: _Timbre("viola", rolloff=1.0, max_partials=18,
                formants=((230, 0.5, 1.5), (400, 0.4, 1.0), (2000, 0.7, 1.5)),
                attack=0.08, decay=0.12, sustain=0.8, release=0.14,
                vibrato_hz=5.4, vibrato_depth=0.0042, noise=0.008),
    43: _Timbre("cello", rolloff=1.0, max_partials=20,
                formants=((200, 0.5, 1.5), (350, 0.4, 0.8), (1500, 0.7, 1.2)),
                attack=0.09, decay=0.15, sustain=0.8, release=0.16,
                vibrato_hz=5.0, vibrato_depth=0.004, noise=0.006),
    61: _Timbre("horn", spectrum=(1, 0.7, 0.45, 0.3, 0.18, 0.1, 0.06, 0.035, 0.02),
                attack=0.06, decay=0.15, sustain=0.85, release=0.12, noise=0.003),
    69: _Timbre("oboe", spectrum=(0.55, 1, 0.9, 0.65, 0.5, 0.35, 0.22, 0.12),
                attack=0.035, decay=0.08, sustain=0.9, release=0.07,
                vibrato_hz=5.5, vibrato_depth=0.0025, noise=0.006, loudness=0.9),
    71: _Timbre("bassoon", spectrum=(0.7, 1, 0.85, 0.6, 0.45, 0.32, 0.22, 0.14, 0.09, 0.05),
                attack=0.045, decay=0.1, sustain=0.88, release=0.08,
                vibrato_hz=5.0, vibrato_depth=0.0015, noise=0.005),
    72: _Timbre("clarinet", spectrum=(1, 0.06, 0.6, 0.05, 0.35, 0.04, 0.2, 0.03, 0.12, 0.02, 0.07),
                attack=0.04, decay=0.1, sustain=0.92, release=0.07, noise=0.006),
    74: _Timbre("flute", spectrum=(1, 0.45, 0.18, 0.08, 0.04, 0.02),
                attack=0.06, decay=0.1, sustain=0.85, release=0.09,
                vibrato_hz=5.0, vibrato_depth=0.003, noise=0.025),
}
INSTRUMENTS = tuple(sorted(_TIMBRES))  # the General MIDI programs the corpus uses
_MOST_PARTIALS = max(len(t.spectrum) or t.max_partials for t in _TIMBRES.values())


def _midi_hz(pitch):
    return 440.0 * 2.0 ** ((pitch - 69) / 12)


def _partials(timbre, f0, sample_rate):
    """Frequency ratios and unit-energy amplitudes of the partials of one note."""
    count = len(timbre.spectrum) or timbre.max_partials
    k = np.arange(1, count + 1, dtype=np.float64)
    amps = np.asarray(timbre.spectrum, dtype=np.float64) if timbre.spectrum else k ** -timbre.rolloff
    ratios = k * np.sqrt(1 + timbre.inharmonicity * k ** 2)
    freqs = ratios * f0
    if timbre.strike_point:
        amps = amps * (0.1 + np.abs(np.sin(np.pi * k * timbre.strike_point)))
    for centre, width, gain in timbre.formants:
        amps = amps * (1 + gain * np.exp(-0.5 * (np.log2(freqs / centre) / width) ** 2))
    limit = min(MAX_PARTIAL_HZ, 0.45 * sample_rate)
    amps = amps * np.clip((limit - freqs) / (0.25 * limit), 0, 1)  # taper to nothing at the limit
    count = max(1, int(np.flatnonzero(amps > 1e-3 * amps.max()).max()) + 1)
    ratios, amps = ratios[:count], amps[:count]
    return ratios, amps / np.sqrt(np.sum(amps ** 2))


@functools.lru_cache(maxsize=8)
def _noise_filter(sample_rate):
    """Band-pass (500 Hz - 5 kHz) for breath and bow noise, and its gain on white noise."""
    b, a = signal.butter(2, [500, min(5000, 0.45 * sample_rate)], btype="band", fs=sample_rate)
    impulse = signal.lfilter(b, a, np.eye(1, sample_rate, dtype=np.float64)[0])
    return b, a, float(np.sqrt(np.sum(impulse ** 2)))


def _exp_decay(rate, n, sample_rate):
    """exp(-rate * t) at `n` samples, float32: an outer product of two short exponentials.

    (np.exp costs ten times a multiplication; exp(-r (a + b)) = exp(-r a) exp(-r b).)
    """
    block = 512
    coarse = np.exp(-rate * np.arange(-(-n // block)) * (block / sample_rate)).astype(np.float32)
    fine = np.exp(-rate * np.arange(block) / sample_rate).astype(np.float32)
    return np.multiply.outer(coarse, fine).ravel()[:n]


def _envelope(timbre, t, hold, sample_rate):
    """Raised-cosine attack, exponential decay to the sustain level, raised-cosine release."""
    pi = np.float32(np.pi)
    attack = max(timbre.attack, 0.002)
    env = 0.5 - 0.5 * np.cos(pi * np.minimum(t * np.float32(1 / attack), 1))
    if not timbre.struck and timbre.sustain < 1:
        onset = min(int(attack * sample_rate), len(t))
        decay = np.ones_like(env)
        decay[onset:] = _exp_decay(1 / timbre.decay, len(t) - onset, sample_rate)
        env *= timbre.sustain + (1 - timbre.sustain) * decay
    release = max(timbre.release, 0.02)
    released = np.minimum(np.maximum(t - np.float32(hold / sample_rate), 0) * np.float32(1 / release), 1)
    env *= 0.5 + 0.5 * np.cos(pi * released)
    return env


def _note_length(timbre, hold, sample_rate):
    """Samples a note held for `hold` samples occupies, release tail included."""
    return hold + max(int(timbre.release * sample_rate), int(0.02 * sample_rate))


_TABLE_SIZE = 4096  # samples in one period of a wavetable


def _render_note(timbre, pitch, hold, velocity, sample_rate, rng, scratch=None):
    """Synthesise one note held for `hold` samples, plus its release tail.

    Struck strings sum their partials one by one (each decays at its own rate and
    is slightly sharp); sustained instruments, whose spectrum does not change,
    read one period of their waveform from a table, vibrato included.

    Args:
        timbre: _Timbre. The instrument.
        pitch: int. MIDI pitch.
        hold: int. Samples from note-on to note-off.
        velocity: float. Amplitude scale.
        sample_rate: int. Hz.
        rng: numpy Generator. Phases, detuning, vibrato and noise.
        scratch: float32 array of at least partials x samples elements, reused
            between notes (fresh large arrays cost more in page faults than the sines).

    Returns:
        float32 array of `_note_length(timbre, hold, sample_rate)` samples.
    """
    n = _note_length(timbre, hold, sample_rate)
    f0 = _midi_hz(pitch)
    if not timbre.struck:
        f0 *= 2 ** (rng.normal(0, 2) / 1200)  # a player is never exactly in tune
    ratios, amps = _partials(timbre, f0, sample_rate)
    t = np.arange(n, dtype=np.float32) * np.float32(1 / sample_rate)
    offsets = rng.uniform(0, 1, len(amps))  # starting phase of each partial, in cycles
    if timbre.struck:
        wave = _struck(timbre, f0, f0 * ratios, amps, offsets, n, sample_rate, scratch)
    else:
        wave = _wavetable(amps, offsets, _phase(timbre, f0, t, sample_rate, rng))
    if timbre.noise:
        b, a, gain = _noise_filter(sample_rate)
        noise = signal.lfilter(b, a, rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
        wave += np.float32(timbre.noise / gain) * noise
    wave *= _envelope(timbre, t, hold, sample_rate)
    wave *= np.float32(velocity * timbre.loudness)
    return wave


def _phase(timbre, f0, t, sample_rate, rng):
    """Phase of the fundamental in cycles, in [0, 1], float32.

    It accumulates in 32-bit fixed point (unsigned integers wrap around at one
    cycle), so it is exact however long the note, and cheap.
    """
    per_sample = 2.0 ** 32 / sample_rate
    if timbre.vibrato_depth:
        depth = timbre.vibrato_depth * np.minimum(np.maximum(t - timbre.attack, 0) * 4, 1)  # fades in
        rate = timbre.vibrato_hz * (1 + 0.05 * rng.standard_normal())
        wobble = np.sin(np.float32(2 * np.pi * rate) * t + np.float32(rng.uniform(0, 2 * np.pi)))
        steps = ((1 + depth * wobble) * np.float32(f0 * per_sample)).astype(np.uint32)
        cycles = np.cumsum(steps, dtype=np.uint32)
    else:
        cycles = np.arange(len(t), dtype=np.uint32) * np.uint32(round(f0 * per_sample))
    return np.multiply(cycles, np.float32(2.0 ** -32), dtype=np.float32)


def _struck(timbre, f0, freqs, amps, offsets, n, sample_rate, scratch):
    """Sum the partials of a struck string; partial k decays (1 + c (k - 1)) times faster.

    Each partial runs at its own, slightly stretched frequency `freqs[k]`. Phases
    are kept in 32-bit fixed point (the products wrap around at whole cycles), so
    they are exact however long the note.
    """
    count = len(amps)
    if scratch is None or scratch.size < count * n:
        scratch = np.empty(count * n, dtype=np.float32)
    cycles = scratch[: count * n].view(np.uint32).reshape(count, n)
    steps = np.round(freqs * (2.0 ** 32 / sample_rate)).astype(np.uint32)
    np.multiply.outer(steps, np.arange(n, dtype=np.uint32), out=cycles)
    cycles += (offsets * 2.0 ** 32).astype(np.uint64).astype(np.uint32)[:, None]
    grid = cycles.view(np.float32)  # converted in place: phase in radians, then the partials
    np.multiply(cycles, np.float32(2 * np.pi / 2.0 ** 32), out=grid, dtype=np.float32)
    np.sin(grid, out=grid)
    # exp(-r (1 + c (k - 1)) t) = fundamental * extra ** (k - 1): two exps instead of one a partial.
    rate = timbre.ring_decay * np.sqrt(f0 / 261.6)  # higher strings die away sooner
    decay = _exp_decay(rate, n, sample_rate)
    extra = _exp_decay(rate * timbre.partial_damping, n, sample_rate)
    for row in grid:
        row *= decay
        decay *= extra
    return amps.astype(np.float32) @ grid


@functools.lru_cache(maxsize=1)
def _harmonic_basis():
    """sin and cos of harmonics 1.. over one period sampled at `_TABLE_SIZE` (+2) points."""
    x = np.arange(_TABLE_SIZE + 2) / _TABLE_SIZE  # two extra points: phase may round up to 1.0
    angle = 2 * np.pi * np.outer(np.arange(1, _MOST_PARTIALS + 1), x)
    return np.sin(angle), np.cos(angle)


def _wavetable(amps, offsets, phase):
    """Read a harmonic waveform (one period, in a table) at the given phases, interpolating."""
    sin, cos = _harmonic_basis()
    count = len(amps)
    # sum_k a_k sin(2 pi (k x + offset_k)), expanded so that no sine is recomputed
    angle = 2 * np.pi * offsets
    table = (amps * np.cos(angle)) @ sin[:count] + (amps * np.sin(angle)) @ cos[:count]
    table = table.astype(np.float32)
    slope = np.diff(table)
    position = phase * np.float32(_TABLE_SIZE)
    index = position.astype(np.intp)
    position -= index  # now the fraction between table points
    wave = table.take(index)
    wave += position * slope.take(index)
    return wave


def _room(audio, sample_rate, rng):
    """A cheap small room: the dry signal plus a short, dark, exponentially decaying noise tail."""
    n = int(0.3 * sample_rate)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-t / 0.06)
    tail = signal.lfilter([0.3], [1, -0.7], tail)
    tail[: int(0.008 * sample_rate)] = 0  # pre-delay
    impulse = 0.25 * tail / np.sqrt(np.sum(tail ** 2))
    impulse[0] = 1.0
    return signal.oaconvolve(audio, impulse.astype(np.float32))[: len(audio)].astype(np.float32)


def _noise_floor(n, rng, level=2e-4):
    """A faint, dark hiss (RMS `level`, about -74 dBFS): rests are quiet, not digital zeros."""
    hiss = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    return (hiss * (level / np.std(hiss))).astype(np.float32)


def _sample_of(plan, beat, sample_rate):
    return int(round((_LEAD_IN_S + beat * 60.0 / plan.bpm) * sample_rate))


def _render_recording(rng, plan, notes, seconds, sample_rate):
    """Mix all notes, add the room and peak-normalise; returns the audio and the label rows."""
    audio = np.zeros(int(round(seconds * sample_rate)), dtype=np.float32)
    spans = [(_sample_of(plan, note.start_beat, sample_rate), _sample_of(plan, note.end_beat, sample_rate))
             for note in notes]
    longest = max((_note_length(_TIMBRES[note.program], end - start, sample_rate)
                   for note, (start, end) in zip(notes, spans)), default=0)
    scratch = np.empty(_MOST_PARTIALS * longest, dtype=np.float32)
    rows = []
    for note, (start, end) in zip(notes, spans):
        wave = _render_note(_TIMBRES[note.program], note.pitch, end - start, note.velocity,
                            sample_rate, rng, scratch)
        stop = min(len(audio), start + len(wave))
        audio[start:stop] += wave[: stop - start]
        rows.append((start, end, note.program, note.pitch, float(note.start_beat), float(note.beats),
                     _note_value(note.beats)))
    audio = _room(audio, sample_rate, rng)
    peak = float(np.max(np.abs(audio)))
    if peak > 0:
        audio *= np.float32(rng.uniform(0.55, 0.75) / peak)
    audio += _noise_floor(len(audio), rng)
    rows.sort(key=lambda row: row[:4])
    return audio, rows


# --------------------------------------------------------------------------- files

def _write_labels(path, rows):
    """Write one MusicNet label CSV (header, then one row per note, by start time)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(LABEL_HEADER)
        writer.writerows(rows)


def _write_metadata(path, rows):
    """Write musicnet_metadata.csv: unquoted header and numbers, quoted text, as MusicNet does."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(",".join(METADATA_HEADER) + "\n")
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        writer.writerows([[row[name] for name in METADATA_HEADER] for row in rows])


def _ensemble_schedule(rng, count):
    """Every other recording is Solo Piano (as in MusicNet); the rest cycle through the others."""
    others = [name for name in _ENSEMBLES if name != "Solo Piano"]
    order = [others[i] for i in rng.permutation(len(others))]
    return ["Solo Piano" if i % 2 == 0 else order[(i // 2) % len(order)] for i in range(count)]


def _tempo_marking(bpm):
    for limit, word in ((76, "Adagio"), (92, "Andante"), (108, "Moderato"), (120, "Allegretto")):
        if bpm < limit:
            return word
    return "Allegro"


def generate_corpus(root, seed=0, n_train=12, n_test=3, seconds=20.0, sample_rate=44100):
    """Write the embedded corpus under `root` in MusicNet's original layout.

    Args:
        root: str or Path. Folder to write into; created if missing. Files already
            there with the same names are overwritten, others are left alone.
        seed: int. Determines every choice: the same seed writes byte-identical files
            (on one platform; other CPUs or numpy builds may differ in the last bits).
        n_train: int. Number of training recordings (ids from 9000).
        n_test: int. Number of test recordings (ids following the training ones).
        seconds: float. Length of each recording, at least 2 seconds.
        sample_rate: int. Sample rate of the WAV files, in Hz.

    Returns:
        Path: `root`.

    Raises:
        KvaeError: if a count is negative, there is no recording at all, `seconds`
            is below 2 or `sample_rate` below 8000.
    """
    if n_train < 0 or n_test < 0 or n_train + n_test == 0:
        raise KvaeError(f"the embedded corpus needs recordings, got n_train={n_train}, n_test={n_test}")
    if seconds < 2:
        raise KvaeError(f"embedded recordings must last at least 2 seconds, got {seconds}")
    if sample_rate < 8000:
        raise KvaeError(f"the embedded corpus needs a sample rate of at least 8000 Hz, got {sample_rate}")
    root = Path(root)
    base = root / "musicnet"
    for split in ("train", "test"):
        (base / f"{split}_data").mkdir(parents=True, exist_ok=True)
        (base / f"{split}_labels").mkdir(parents=True, exist_ok=True)

    schedule_rng = np.random.default_rng(seed)
    ensembles = _ensemble_schedule(schedule_rng, n_train) + _ensemble_schedule(schedule_rng, n_test)
    splits = ["train"] * n_train + ["test"] * n_test
    children = np.random.SeedSequence(seed).spawn(n_train + n_test)
    jobs, numbers = [], {}
    for index, (split, ensemble, child) in enumerate(zip(splits, ensembles, children)):
        numbers[ensemble] = numbers.get(ensemble, 0) + 1
        jobs.append(_Job(FIRST_ID + index, split, ensemble, numbers[ensemble], child))

    def build(job):
        return _build_recording(job, base, seconds, sample_rate)

    # Recordings are independent (one random stream each) and numpy releases the
    # GIL in its array loops, so threads speed the build up without changing a byte.
    workers = max(1, min(len(jobs), os.cpu_count() or 1, 4))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        metadata = list(pool.map(build, jobs))
    _write_metadata(root / METADATA_FILE, metadata)
    return root


@dataclass(frozen=True)
class _Job:
    """One recording to build."""

    rec_id: int
    split: str
    ensemble: str
    number: int               # its number among the corpus's pieces for this ensemble
    seed: np.random.SeedSequence


def _build_recording(job, base, seconds, sample_rate):
    """Compose, render and write one recording and its labels; returns its metadata row."""
    rng = np.random.default_rng(job.seed)
    plan = _make_plan(rng, seconds)
    notes = _compose(rng, plan, job.ensemble)
    audio, rows = _render_recording(rng, plan, notes, seconds, sample_rate)
    wavfile.write(base / f"{job.split}_data" / f"{job.rec_id}.wav", sample_rate, audio)
    _write_labels(base / f"{job.split}_labels" / f"{job.rec_id}.csv", rows)
    return {
        "id": job.rec_id,
        "composer": str(rng.choice(_COMPOSERS)),
        "composition": f"{_FORMS[job.ensemble]} No {job.number} in {plan.key.name}",
        "movement": f"{int(rng.integers(1, 4))}. {_tempo_marking(plan.bpm)}",
        "ensemble": job.ensemble,
        "source": "kvae embedded synthesis",
        "transcriber": "kvae (labels of the rendered notes)",
        "catalog_name": f"KS{job.rec_id}",
        "seconds": int(round(len(audio) / sample_rate)),
    }


def embedded_root(seed=0):
    """Return the cached embedded corpus, building it on first use.

    The corpus lives in ``kvae_home()/"embedded"/f"v{EMBEDDED_VERSION}-seed{seed}"``.
    It is built in a temporary sibling folder, marked complete, and renamed into
    place, so an interrupted build never leaves a half corpus; a folder without
    the marker is treated as absent and rebuilt. If another process finishes
    first, its corpus is used.

    Args:
        seed: int. Seed of the corpus (see `generate_corpus`).

    Returns:
        Path: the corpus root (holding ``musicnet/`` and ``musicnet_metadata.csv``).
    """
    final = kvae_home() / "embedded" / f"v{EMBEDDED_VERSION}-seed{seed}"
    if (final / MARKER_FILE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    try:
        generate_corpus(building, seed=seed)
        (building / MARKER_FILE).write_text(
            f"kvae embedded corpus, version {EMBEDDED_VERSION}, seed {seed}\n", encoding="utf-8")
        if final.exists() and not (final / MARKER_FILE).is_file():
            _remove_stale(final)
        try:
            os.replace(building, final)
        except OSError:
            if not (final / MARKER_FILE).is_file():  # nobody else finished it: a real failure
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


def _remove_stale(folder):
    """Move an unmarked (incomplete) corpus folder aside, then delete it."""
    stale = Path(tempfile.mkdtemp(prefix=f".{folder.name}.stale-", dir=folder.parent))
    try:
        os.replace(folder, stale / folder.name)
    except OSError:
        pass  # already gone, or being replaced by another process
    shutil.rmtree(stale, ignore_errors=True)
