"""Whether a FLAC stream is whole, from its bytes, before a decoder reads it (a cut-short one can hang it)."""

import math
from pathlib import Path


def _crc8(data):
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _frame_number(data, at):
    """The frame number of a fixed-block-size FLAC frame header at `at` whose CRC-8 checks, else None."""
    if data[at:at + 2] != b"\xff\xf8" or at + 5 > len(data):
        return None
    first, i = data[at + 4], at + 5
    extra = next((n for n, mask in ((0, 0x80), (1, 0xE0), (2, 0xF0), (3, 0xF8), (4, 0xFC), (5, 0xFE))
                  if first & mask == (mask << 1) & 0xFF), None)
    if extra is None:
        return None
    number = first & (0x7F >> extra if extra else 0x7F)
    for byte in data[i:i + extra]:
        number = (number << 6) | (byte & 0x3F)
    i += extra
    i += {6: 1, 7: 2}.get(data[at + 2] >> 4, 0) + {12: 1, 13: 2, 14: 2}.get(data[at + 2] & 0x0F, 0)
    if i >= len(data) or _crc8(data[at:i]) != data[i]:
        return None
    return number


def flac_cut_short(path):
    """True when a fixed-block-size FLAC file's last frame is not the last of the frames its STREAMINFO counts."""
    data = Path(path).read_bytes()
    at = data.find(b"fLaC") + 4
    info, last = None, False
    while not last and at + 4 <= len(data):
        kind, length = data[at] & 0x7F, int.from_bytes(data[at + 1:at + 4], "big")
        last = bool(data[at] & 0x80)
        if kind == 0 and length >= 18:
            info = data[at + 4:at + 4 + 18]
        at += 4 + length
    if info is None or len(info) < 18:
        return False
    block = int.from_bytes(info[0:2], "big")
    total = int.from_bytes(info[13:18], "big") & (2 ** 36 - 1)
    if not (block == int.from_bytes(info[2:4], "big") > 0 and total > 0):
        return False  # a variable block size or an unknown length: nothing to compare
    expected = math.ceil(total / block) - 1
    tail = max(at, len(data) - 65536)
    found = -1
    for i in range(len(data) - 2, tail - 1, -1):
        number = _frame_number(data, i) if data[i] == 0xFF else None
        if number is not None:
            found = number
            break
    return found >= 0 and found < expected
