"""The ensembles and their parts: melody, bass, chords, inner voices and figuration.

`_compose` writes every part of an ensemble over a `_Plan` and returns the notes
of the recording, with the general pause cut out and unison clashes removed.
"""

from dataclasses import dataclass

import numpy as np

from kvae.data.embedded.score import _Note

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

