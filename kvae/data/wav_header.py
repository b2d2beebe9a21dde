"""A WAV file's header, checked before `scipy.io.wavfile` reads it: what is broken, in plain words."""

import os
import struct


def wav_problem(path):
    """Walk a WAV file's RIFF chunks (headers only) and say what is wrong with them, or return None.

    `scipy.io.wavfile` trusts the header: a fmt chunk larger than the file ends
    in an UnboundLocalError, 0 channels in a ZeroDivisionError. This reads
    the chunk headers with `struct` (a few small reads, no samples) and
    returns a one-line reason for what scipy would trip over; a data chunk cut
    short is left to scipy, which warns that the file is truncated.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
            return "not a WAV file (no RIFF header)"
        if head[:4] == b"RF64":  # sizes live in a ds64 chunk; scipy reads it
            return None
        order = ">" if head[:4] == b"RIFX" else "<"
        riff_end = 8 + struct.unpack(order + "I", head[4:8])[0]
        if riff_end < 20:
            return f"not a valid WAV file: RIFF header says the file holds {riff_end - 8} bytes"
        pos, fmt = 12, None
        while pos < riff_end:
            f.seek(pos)
            header = f.read(8)
            if len(header) < 8:
                break
            name = header[:4].decode("latin-1")
            name = name if name.isprintable() else repr(header[:4])[1:]
            chunk = struct.unpack(order + "I", header[4:])[0]
            body = pos + 8
            if header[:4] == b"fmt ":
                if chunk < 16:
                    return f"not a valid WAV file: fmt chunk of {chunk} bytes (a WAV fmt chunk has at least 16)"
                if body + chunk > size:
                    if chunk > 1024:  # fmt chunks are 16, 18 or 40 bytes: this is no cut-off file
                        return (f"not a valid WAV file: fmt chunk of {chunk} bytes "
                                f"(only {max(size - body, 0)} bytes follow)")
                    return f"truncated WAV (the file ends inside its fmt chunk, at byte {size})"
                tag, channels, rate, _, align, bits = struct.unpack(order + "HHIIHH", f.read(16))
                if channels == 0:
                    return "WAV header says 0 channels"
                if rate == 0:
                    return "WAV header says a sample rate of 0 Hz"
                if align < channels:
                    return f"WAV header says {align} bytes per frame for {channels} channels"
                if tag in (1, 0xFFFE) and 8 * (align // channels) < bits:  # 12-bit in 16-bit frames is fine
                    return (f"{bits}-bit WAV samples packed in {align}-byte frames are not supported (samples "
                            "padded to whole bytes are); convert it, e.g. `sox IN.wav -b 16 OUT.wav`")
                fmt = (tag, bits)
            elif header[:4] == b"data":
                if fmt is None:
                    return "not a valid WAV file: data chunk before the fmt chunk"
                return None  # samples cut short are scipy's to report (truncated WAV)
            elif body + chunk > size:
                return f"not a valid WAV file: {name} chunk of {chunk} bytes runs past the end of the file ({size} bytes)"
            pos = body + chunk + (chunk & 1)
    if fmt is None:
        return "not a valid WAV file: no fmt chunk"
    if riff_end < size:
        return f"not a valid WAV file: no data chunk in the {riff_end - 8} bytes its RIFF header gives"
    return "not a valid WAV file: no data chunk"
