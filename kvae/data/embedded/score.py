"""The score of one recording: key, harmony, form, notes and their MusicNet note values.

`_make_plan` picks key, metre, tempo, chord progression and general pause;
`_Note` is one note of the score; `_note_value` names a length in beats.
"""

from dataclasses import dataclass

import numpy as np

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

