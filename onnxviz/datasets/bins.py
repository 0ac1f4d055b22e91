"""Fixed histogram bins read straight from float32 bits: exact merges, no calibration pass.

A value's bin is its sign, its binary exponent and the top two bits of its mantissa, so every
octave ``[2^e, 2^(e+1))`` is cut into four bins (each about 19% wide) and the bin edges are the
same for every layer, every batch and every machine: histograms from any split of the images add
up to the histogram of the whole set, count for count.

Magnitudes from ``2^-16`` (1.5e-5) to ``2^16`` (65536) get their own bins; smaller magnitudes fall
in one bin per sign beside an exact-zero bin, larger ones (and ±Inf) in one overflow bin per sign,
NaN in the last bin. 262 bins, in increasing value order:

    0            x <= -2^16 (and -Inf)
    1..128       negative octaves, from -2^16 up to -2^-16
    129          -2^-16 < x < 0
    130          x == 0 (either sign; subnormals, |x| < 2^-126, too)
    131          0 < x < 2^-16
    132..259     positive octaves, from 2^-16 up to 2^16
    260          x >= 2^16 (and +Inf)
    261          NaN
"""

from __future__ import annotations

import numpy as np

__all__ = ["NBINS", "E_MIN", "E_MAX", "SUB", "bin_index", "bin_edges", "ZERO_BIN", "NAN_BIN", "bin_label"]

SUB = 4  # bins per octave (two mantissa bits)
E_MIN, E_MAX = -16, 16
_OCT = (E_MAX - E_MIN) * SUB  # 128 bins per sign
NBINS = 2 * _OCT + 6  # 262
NEG_TINY, ZERO_BIN, POS_TINY = _OCT + 1, _OCT + 2, _OCT + 3
POS_FIRST, POS_OVER, NAN_BIN = _OCT + 4, 2 * _OCT + 4, 2 * _OCT + 5
_OFFSET = (E_MIN + 127) * SUB  # biased exponent·4 + mantissa bits of 2^E_MIN



def _lut() -> np.ndarray:
    """Bin of every value of ``bits >> 21`` (sign, 8 exponent bits, 2 mantissa bits)."""
    key = np.arange(1 << 11)
    sign, exponent, sub = key >> 10, (key >> 2) & 0xFF, key & 3
    octave = np.clip(((key & 0x3FF) - _OFFSET), -1, _OCT)
    pos = np.where(octave < 0, POS_TINY, np.where(octave >= _OCT, POS_OVER, POS_FIRST + octave))
    neg = np.where(octave < 0, NEG_TINY, np.where(octave >= _OCT, 0, _OCT - octave))
    lut = np.where(sign == 1, neg, pos)
    lut[exponent == 0] = ZERO_BIN  # zero and subnormals (|x| < 2^-126)
    lut[(exponent == 0xFF) & (sub != 0)] = NAN_BIN
    return lut.astype(np.int16)


_LUT = _lut()
_LUT_WIDE = _LUT.astype(np.intp)


def bin_index(values: np.ndarray, *, wide: bool = False) -> np.ndarray:
    """The bin of every float32 value (any shape), as int16 (``wide``: as intp, for bincount).

    The zero bin also takes subnormals (|x| < 2^-126); a NaN whose payload sits only in the low
    mantissa bits counts as an overflow. Two passes: a shift and a table lookup.
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return (_LUT_WIDE if wide else _LUT)[bits >> 21]


def bin_edges() -> np.ndarray:
    """``NBINS + 1`` float64 edges: bin i lies between ``edges[i]`` and ``edges[i + 1]`` (the zero
    bin between 0 and 0, the NaN bin between +Inf and NaN)."""
    k = np.arange(_OCT + 1)
    octave = 2.0 ** (E_MIN + k // SUB) * (1 + (k % SUB) / SUB)  # 2^-16 … 2^16
    return np.concatenate([[-np.inf], -octave[::-1], [0.0, 0.0], octave, [np.inf, np.nan]])


def bin_label(index: int) -> str:
    """A short text for one bin (``[0.5, 0.625)``, ``0``, ``NaN``)."""
    if index == ZERO_BIN:
        return "0"
    if index == NAN_BIN:
        return "NaN"
    edges = bin_edges()
    return f"{edges[index]:.4g} … {edges[index + 1]:.4g}"
