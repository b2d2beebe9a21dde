"""kvae.data: discover, decode, resample, cache and window audio.

Data flows one way: files -> `find_recordings` -> `prepare` (decode, resample,
cache) -> `Corpus` (memory-mapped) -> `WindowSource` (random or fixed windows)
-> a `keras.utils.PyDataset` or a `tf.data.Dataset`.
"""

from kvae.data.audio_io import AudioFileError, AudioReader, ResampledReader, read_audio, resample, to_float_mono
from kvae.data.cache import Corpus, Entry, PrepareReport, default_cache_dir, prepare
from kvae.data.sources import Recording, Source, find_recordings, read_metadata
from kvae.data.wav_writer import WavStreamWriter, WavWriter, write_wav
from kvae.data.windows import WindowSource, make_py_dataset, normalize_window

__all__ = [
    "AudioFileError", "AudioReader", "Corpus", "Entry", "PrepareReport", "Recording", "Source", "WavStreamWriter",
    "WindowSource",
    "default_cache_dir", "find_recordings", "make_py_dataset", "normalize_window", "prepare",
    "read_audio", "read_metadata", "resample", "ResampledReader", "to_float_mono", "WavWriter", "write_wav",
]
