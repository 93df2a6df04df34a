"""Two-pass EBU R128 normalisation with FFmpeg's loudnorm filter.

The first pass only measures (`print_format=json`); the second applies one constant gain
computed from those measurements (`linear=true`), which keeps the music's dynamics and lands
within a fraction of a LU of the target. loudnorm falls back to its dynamic mode when a
constant gain would push true peaks over the ceiling; that still meets the target.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from shared.errors import ErrorCode, MediaError

TRUE_PEAK_CEILING = -1.0
DEFAULT_LOUDNESS_RANGE = 11.0
MAX_LOUDNESS_RANGE = 50.0

_JSON_BLOCK = re.compile(r"\{[^{}]*\"input_i\"[^{}]*\}", re.DOTALL)


@dataclass(frozen=True)
class Measurement:
    integrated: float
    true_peak: float
    loudness_range: float
    threshold: float
    offset: float

    @property
    def silent(self) -> bool:
        # loudnorm reports -inf (or -70, the gate floor) for digital silence.
        return not math.isfinite(self.integrated) or self.integrated <= -70


def measure_filter(target: float, loudness_range: float = DEFAULT_LOUDNESS_RANGE) -> str:
    return (
        f"loudnorm=I={target:g}:TP={TRUE_PEAK_CEILING:g}:LRA={loudness_range:g}:print_format=json"
    )


def apply_filter(target: float, measured: Measurement) -> str:
    """The second pass's filter, with the first pass's numbers fed back in."""
    return (
        f"loudnorm=I={target:g}:TP={TRUE_PEAK_CEILING:g}"
        f":LRA={loudness_range_for(measured):g}"
        f":measured_I={measured.integrated:.2f}"
        f":measured_TP={measured.true_peak:.2f}"
        f":measured_LRA={measured.loudness_range:.2f}"
        f":measured_thresh={measured.threshold:.2f}"
        f":offset={measured.offset:.2f}"
        ":linear=true:print_format=none"
    )


def loudness_range_for(measured: Measurement) -> float:
    """A target range no narrower than the source's, else loudnorm goes dynamic and compresses."""
    wanted = max(DEFAULT_LOUDNESS_RANGE, math.ceil(measured.loudness_range) + 1.0)
    return min(MAX_LOUDNESS_RANGE, wanted)


def parse_measurement(stderr: str) -> Measurement:
    """The numbers loudnorm printed at the end of the first pass."""
    blocks = _JSON_BLOCK.findall(stderr)
    if not blocks:
        raise MediaError(
            "loudness measurement produced no result", code=ErrorCode.CONVERSION_FAILED
        )
    try:
        raw = json.loads(blocks[-1])
        return Measurement(
            integrated=float(raw["input_i"]),
            true_peak=float(raw["input_tp"]),
            loudness_range=float(raw["input_lra"]),
            threshold=float(raw["input_thresh"]),
            offset=float(raw["target_offset"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise MediaError(
            "loudness measurement was unreadable", code=ErrorCode.CONVERSION_FAILED
        ) from exc
