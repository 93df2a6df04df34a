from __future__ import annotations

import pytest

from services.gateway.downloads import RangeNotSatisfiable, content_disposition, parse_range
from services.gateway.service import clean_filename


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-2000", (990, 999)),
        ("bytes=0-0", (0, 0)),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=500-100", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def test_content_disposition_is_safe_and_exact() -> None:
    value = content_disposition('été "quoted"\r\nX-Injected: 1.mp3')
    assert "\r" not in value
    assert "\n" not in value
    assert value.startswith('attachment; filename="')
    fallback = value.split('filename="')[1].split('"')[0]
    assert '"' not in fallback
    assert "\\" not in fallback
    assert "filename*=UTF-8''%C3%A9t%C3%A9%20%22quoted%22%0D%0AX-Injected%3A%201.mp3" in value


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("holiday.mp4", "holiday.mp4"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\clip.mov", "clip.mov"),
        ("", "upload"),
        (None, "upload"),
        ("a\x00b\x1f.mp4", "ab.mp4"),
    ],
)
def test_clean_filename(raw: str | None, clean: str) -> None:
    assert clean_filename(raw) == clean
