"""Turn FFmpeg's `-progress` output into seconds done, percentages, and rate-limited updates."""

from __future__ import annotations

import re

_CLOCK = re.compile(r"^(-?)(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


class ProgressParser:
    """Parses `key=value` lines; every block ends with `progress=continue` or `progress=end`.

    `feed` returns the block's output time in seconds when a block closes, else None.
    """

    def __init__(self) -> None:
        self._block: dict[str, str] = {}
        self.ended = False
        self.last_seconds: float | None = None

    def feed(self, line: str) -> float | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        key, value = key.strip(), value.strip()
        if key != "progress":
            self._block[key] = value
            return None
        block, self._block = self._block, {}
        if value == "end":
            self.ended = True
        seconds = out_time_seconds(block)
        if seconds is not None:
            self.last_seconds = seconds
        return seconds


def out_time_seconds(block: dict[str, str]) -> float | None:
    """The block's output position; None before FFmpeg knows it ("N/A") or when negative."""
    # `out_time_ms` is microseconds too (an FFmpeg naming bug kept for compatibility).
    for key in ("out_time_us", "out_time_ms"):
        raw = block.get(key)
        if raw is not None:
            try:
                micros = int(raw)
            except ValueError:
                continue
            return micros / 1_000_000 if micros >= 0 else None
    clock = block.get("out_time")
    if clock is not None:
        match = _CLOCK.match(clock)
        if match and not match.group(1):
            hours, minutes, seconds = match.group(2, 3, 4)
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def percent(done: float, duration: float | None) -> int:
    """Whole percent done, at most 99: only the caller, on success, may say 100."""
    if duration is None or duration <= 0:
        return 0
    value = int(done * 100 / duration)
    return max(0, min(99, value))


class ProgressThrottle:
    """Lets an update through only when the percentage grew and `min_interval` has passed."""

    def __init__(self, min_interval: float = 0.5) -> None:
        self.min_interval = min_interval
        self.last_percent = -1
        self._last_time: float | None = None

    def should_emit(self, percent: int, now: float) -> bool:
        if percent <= self.last_percent:
            return False
        if self._last_time is not None and now - self._last_time < self.min_interval:
            return False
        self.last_percent = percent
        self._last_time = now
        return True
