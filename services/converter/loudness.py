"""EBU R128 normalisation: measure with FFmpeg's ebur128 filter, apply one constant gain.

The source's integrated loudness gives the gain. Where that gain would push true peaks past
the ceiling, a limiter holds them back; it also takes some loudness away, so the limited
signal is measured again and the gain corrected until it lands near the target. loudnorm was
not used: on a clip under 3 s (its window) its "linear" pass ignores the measured numbers
(a 2.5 s clip asked for -14 LUFS came out at -20.3), and its dynamic fallback misses loud
targets by 2 LU or more.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from shared.errors import ErrorCode, MediaError

TRUE_PEAK_CEILING = -1.0
# alimiter holds sample peaks, not true (inter-sample) peaks, nor what an MP3 encoder adds:
# half a dB of room keeps the true peak near the ceiling.
LIMIT_DBFS = TRUE_PEAK_CEILING - 0.5
# EBU R128's short-term window: below it no loudness reading is meaningful for a whole clip.
MIN_MEASURABLE_SECONDS = 3.0
# Correction passes over the limited signal stop once within this many LU of the target.
TOLERANCE = 0.3
MAX_CORRECTIONS = 3
# A limiter can make anything loud; past this much extra gain the audio is all distortion.
MAX_CORRECTION_DB = 24.0
SILENCE_LUFS = -70.0

MEASURE_FILTER = "ebur128=peak=true:framelog=quiet"
TOO_SHORT = (
    f"the output is shorter than {MIN_MEASURABLE_SECONDS:g} s: its loudness cannot be "
    "measured, so reaching the target is not guaranteed"
)
SILENT = "the audio is silent: there was nothing to normalise"

_SUMMARY = re.compile(r"Summary:(.*)", re.DOTALL)
_INTEGRATED = re.compile(r"I:\s+(-?[\d.]+|-inf)\s+LUFS")
_PEAK = re.compile(r"Peak:\s+(-?[\d.]+|-inf)\s+dBFS")


@dataclass(frozen=True)
class Measurement:
    integrated: float
    """LUFS; SILENCE_LUFS or -inf for silence."""
    true_peak: float
    """dBTP; -inf for digital silence."""

    @property
    def silent(self) -> bool:
        return not math.isfinite(self.integrated) or self.integrated <= SILENCE_LUFS


@dataclass(frozen=True)
class Gain:
    db: float
    limit: bool

    def filters(self) -> list[str]:
        chain = [f"volume={self.db:.2f}dB"]
        if self.limit:
            ceiling = 10 ** (LIMIT_DBFS / 20)
            # level=false: no make-up gain; latency=true: the lookahead does not shift the audio.
            chain.append(f"alimiter=limit={ceiling:.4f}:level=false:latency=true")
        return chain


def gain_for(target: float, measured: Measurement, correction: float = 0.0) -> Gain | None:
    """The gain bringing `measured` to `target` (plus a correction for the limiter's loss);
    None for silence, which no gain makes loud."""
    if measured.silent:
        return None
    db = target - measured.integrated + min(MAX_CORRECTION_DB, max(0.0, correction))
    return Gain(db, limit=measured.true_peak + db > TRUE_PEAK_CEILING)


def parse_summary(stderr: str) -> Measurement:
    """The integrated loudness and true peak ebur128 printed when its input ended."""
    summary = _SUMMARY.findall(stderr)
    integrated = _INTEGRATED.findall(summary[-1]) if summary else []
    peak = _PEAK.findall(summary[-1]) if summary else []
    if not integrated or not peak:
        raise MediaError(
            "loudness measurement produced no result", code=ErrorCode.CONVERSION_FAILED
        )
    return Measurement(integrated=float(integrated[-1]), true_peak=float(peak[-1]))
