"""Additive synthesis: instrument timbres, partials, envelopes, notes and whole recordings.

`_render_recording` mixes the notes of a score, adds a small room and a noise
floor, peak-normalises, and returns the audio with its MusicNet label rows.
"""

import functools
from dataclasses import dataclass

import numpy as np
from scipy import signal

from kvae.data.embedded.score import _LEAD_IN_S, _note_value

MAX_PARTIAL_HZ = 10_000.0  # no partial is rendered above this

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

