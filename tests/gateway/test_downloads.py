from __future__ import annotations

import pytest

from services.gateway.downloads import RangeNotSatisfiable, content_disposition, parse_range
from services.gateway.service import clean_filename
from shared.errors import ErrorCode, NotFound
from shared.links import sign_download_token, verify_download_token


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
        # Numbers no file reaches (int() refuses over 4,300 digits), other scripts' digits.
        ("bytes=0-" + "9" * 5000, None),
        ("bytes=" + "1" * 5000 + "-", None),
        ("bytes=\u0663-", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=500-100", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


@pytest.mark.parametrize("header", ["bytes=-5", "bytes=0-", "bytes=0-0", "bytes=-0"])
def test_an_empty_file_is_served_whole_whatever_the_range(header: str) -> None:
    # A range of an empty file would be "bytes 0--1/0", and the blob read refuses it.
    assert parse_range(header, 0) is None


@pytest.mark.parametrize(
    "token",
    [
        "job1.4102444800.\u00e9",  # non-ASCII signature
        "job\u00e9.4102444800.abc",  # non-ASCII job id
        "job1.\u00b2.abc",  # a digit to str.isdigit, not to int()
        "job1." + "9" * 5000 + ".abc",  # an expiry int() refuses to read
        "job1.4102444800",
        "",
    ],
)
def test_a_malformed_download_link_is_not_found(token: str) -> None:
    with pytest.raises(NotFound) as caught:
        verify_download_token(b"k" * 32, token)
    assert caught.value.code is ErrorCode.LINK_INVALID


def test_a_signed_download_link_names_its_job() -> None:
    token = sign_download_token(b"k" * 32, "job1", 60)
    assert verify_download_token(b"k" * 32, token) == "job1"
    assert token.isascii()


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
