"""The tus wire format: metadata, lengths, versions and content types, as the spec writes them."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.gateway.tus_protocol import (
    OffsetMismatch,
    VersionUnsupported,
    WrongContentType,
    check_offset_body,
    check_version,
    http_date,
    parse_length,
    parse_metadata,
    split_metadata,
)
from shared.errors import AppError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_metadata_pairs_and_empty_values() -> None:
    header = f"filename {b64('Fête à Montréal.mkv')},is_confidential,title {b64('')}"
    assert parse_metadata(header) == {
        "filename": "Fête à Montréal.mkv",
        "is_confidential": "",
        "title": "",
    }
    assert parse_metadata(None) == {}
    assert parse_metadata("  ") == {}


@pytest.mark.parametrize(
    "header",
    [
        "filename not*base64",
        f"filename {base64.b64encode(bytes([0xFF, 0xFE])).decode()}",  # not UTF-8
        f"a {b64('x')},a {b64('y')}",  # repeated key
        f"a {b64('x')},,b",  # empty pair
        f"filename {b64('x' * 9000)}",  # longer than the limit
    ],
)
def test_malformed_metadata_is_400(header: str) -> None:
    with pytest.raises(AppError) as caught:
        parse_metadata(header)
    assert caught.value.status_code == 400


def test_descriptive_keys_are_not_options() -> None:
    filename, options = split_metadata(
        {"filename": "a.mp4", "filetype": "video/mp4", "name": "a", "bitrate": "192"}
    )
    assert filename == "a.mp4"
    assert options == {"bitrate": "192"}


@pytest.mark.parametrize("value", [None, "", "-1", "1.5", "0x10", "1" * 20, "ten"])
def test_lengths_are_non_negative_integers(value: str | None) -> None:
    with pytest.raises(AppError) as caught:
        parse_length(value, "Upload-Offset")
    assert caught.value.status_code == 400
    assert parse_length("0", "Upload-Offset") == 0
    assert parse_length(" 123 ", "Upload-Length") == 123


def test_versions_and_content_types() -> None:
    check_version("1.0.0")
    for version in (None, "", "0.2.2", "1.0"):
        with pytest.raises(VersionUnsupported):
            check_version(version)
    check_offset_body("application/offset+octet-stream")
    check_offset_body("Application/Offset+Octet-Stream; charset=binary")
    for content_type in (None, "application/octet-stream", "video/mp4"):
        with pytest.raises(WrongContentType):
            check_offset_body(content_type)
    assert VersionUnsupported("x").status_code == 412
    assert OffsetMismatch("x").status_code == 409


def test_expiry_dates_are_http_dates_in_gmt() -> None:
    moment = datetime(2026, 6, 25, 16, 0, tzinfo=UTC)
    assert http_date(moment) == "Thu, 25 Jun 2026 16:00:00 GMT"
    # Whatever zone the database hands back.
    assert http_date(moment.astimezone(timezone(timedelta(hours=2)))) == http_date(moment)
