from __future__ import annotations

import pytest

from services.converter.progress import ProgressParser, ProgressThrottle, percent

# Two blocks as FFmpeg 6..9 print them with `-progress pipe:1`.
SAMPLE = """\
bitrate=N/A
total_size=0
out_time_us=N/A
out_time_ms=N/A
out_time=N/A
speed=N/A
progress=continue
bitrate= 190.1kbits/s
total_size=53843
out_time_us=2500000
out_time_ms=2500000
out_time=00:00:02.500000
speed= 174x
progress=continue
out_time_us=10000000
out_time_ms=10000000
out_time=00:00:10.000000
progress=end
"""


def test_parser_yields_seconds_per_block() -> None:
    parser = ProgressParser()
    results = [parser.feed(line) for line in SAMPLE.splitlines()]
    closed = [
        r for line, r in zip(SAMPLE.splitlines(), results, strict=True) if "progress=" in line
    ]
    assert closed == [None, 2.5, 10.0]
    assert [r for r in results if r is not None] == [2.5, 10.0]
    assert parser.ended
    assert parser.last_seconds == 10.0


def test_parser_falls_back_to_clock_and_ms() -> None:
    parser = ProgressParser()
    parser.feed("out_time=01:02:03.500000\n")
    assert parser.feed("progress=continue\n") == pytest.approx(3723.5)
    parser.feed("out_time_ms=1500000")
    assert parser.feed("progress=continue") == pytest.approx(1.5)
    assert not parser.ended


def test_parser_ignores_negative_and_garbage() -> None:
    parser = ProgressParser()
    for line in ("out_time_us=-9223372036854775807", "out_time=-00:00:00.023220", "junk line"):
        assert parser.feed(line) is None
    assert parser.feed("progress=continue") is None
    assert parser.last_seconds is None


def test_parser_forgets_values_of_earlier_blocks() -> None:
    parser = ProgressParser()
    parser.feed("out_time_us=4000000")
    assert parser.feed("progress=continue") == 4.0
    assert parser.feed("progress=continue") is None


@pytest.mark.parametrize(
    ("done", "duration", "expected"),
    [
        (0, 10, 0),
        (2.5, 10, 25),
        (9.999, 10, 99),
        (10, 10, 99),
        (12, 10, 99),
        (-1, 10, 0),
        (5, None, 0),
        (5, 0, 0),
    ],
)
def test_percent_is_clamped_below_100(done: float, duration: float | None, expected: int) -> None:
    assert percent(done, duration) == expected


def test_throttle_only_lets_growth_through_at_the_interval() -> None:
    throttle = ProgressThrottle(min_interval=0.5)
    assert throttle.should_emit(0, now=100.0)
    assert not throttle.should_emit(0, now=101.0)  # same percent
    assert not throttle.should_emit(5, now=100.2)  # too soon
    assert throttle.should_emit(5, now=100.5)
    assert not throttle.should_emit(3, now=102.0)  # never backwards
    assert throttle.should_emit(6, now=102.0)
    assert throttle.last_percent == 6
