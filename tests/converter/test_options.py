from __future__ import annotations

from typing import Any

import pytest

from shared.errors import Unprocessable
from shared.options import OPTIONS_ERROR_CODE, ConversionOptions, InvalidOptions, parse_seconds


def test_defaults() -> None:
    options = ConversionOptions.from_form({})
    assert options.normalized() == {
        "format": "mp3", "bitrate": None, "quality": None, "sample_rate": "keep",
        "channels": 2, "start": None, "end": None, "normalize": False,
        "loudness_target": -14.0, "audio_track": None, "title": None, "artist": None,
        "album": None, "year": None, "genre": None, "cover": "none",
    }  # fmt: skip
    assert options.vbr_quality == 2
    assert (options.output_extension, options.content_type) == ("mp3", "audio/mpeg")
    assert not options.trims


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"bitrate": "320"}, {"bitrate": 320}),
        ({"quality": "0"}, {"quality": 0}),
        ({"quality": "9", "sample_rate": "44100"}, {"quality": 9, "sample_rate": 44100}),
        ({"sample_rate": "48000", "channels": "1"}, {"sample_rate": 48000, "channels": 1}),
        ({"start": "90.5"}, {"start": 90.5}),
        ({"start": "01:30", "end": "1:02:03.25"}, {"start": 90.0, "end": 3723.25}),
        ({"end": "00:00:05"}, {"end": 5.0}),
        ({"normalize": "on"}, {"normalize": True}),
        ({"normalize": "1", "loudness_target": "-23.5"},
         {"normalize": True, "loudness_target": -23.5}),
        ({"normalize": "false"}, {"normalize": False}),
        ({"audio_track": "1"}, {"audio_track": 1}),
        ({"title": "  Song  ", "artist": "Ünïcødé", "year": "1987", "genre": "Rock"},
         {"title": "Song", "artist": "Ünïcødé", "year": 1987, "genre": "Rock"}),
        ({"cover": "frame"}, {"cover": "frame"}),
        ({"format": "m4a", "bitrate": "256"}, {"format": "m4a", "bitrate": 256}),
        ({"format": "opus", "sample_rate": "48000"}, {"format": "opus", "sample_rate": 48000}),
        ({"format": "flac", "cover": "frame"}, {"format": "flac", "cover": "frame"}),
        ({"format": "wav", "channels": "1"}, {"format": "wav", "channels": 1}),
        ({"bitrate": "", "title": "", "start": ""}, {}),
    ],
)  # fmt: skip
def test_valid_forms(form: dict[str, str], expected: dict[str, Any]) -> None:
    options = ConversionOptions.from_form(form)
    normalized = options.normalized()
    for key, value in expected.items():
        assert normalized[key] == value, key
    # The echo in the job document reads back as the same options.
    assert ConversionOptions.parse(normalized) == options


@pytest.mark.parametrize(
    ("form", "field", "reason"),
    [
        ({"bitrate": "128", "quality": "2"}, "quality",
         "give either bitrate (constant) or quality (VBR), not both"),
        ({"bitrate": "100"}, "bitrate", "must be one of 64, 96, 128, 160, 192, 256, 320 (kbit/s)"),
        ({"bitrate": "fast"}, "bitrate",
         "must be a valid integer, unable to parse string as an integer"),
        ({"quality": "10"}, "quality", "must be less than or equal to 9"),
        ({"quality": "-1"}, "quality", "must be greater than or equal to 0"),
        ({"sample_rate": "22050"}, "sample_rate", "must be one of keep, 44100, 48000"),
        ({"channels": "6"}, "channels", "must be one of 1, 2"),
        ({"format": "aac"}, "format", "must be one of mp3, m4a, opus, flac, wav"),
        ({"start": "5", "end": "5"}, "end", "must be after start"),
        ({"start": "10", "end": "00:00:04"}, "end", "must be after start"),
        ({"end": "0"}, "end", "must be after the beginning of the file"),
        ({"start": "-1"}, "start", "must not be negative"),
        ({"start": "1:75"}, "start", "seconds must be below 60 in mm:ss or hh:mm:ss"),
        ({"start": "1:60:00"}, "start", "minutes must be below 60 in hh:mm:ss"),
        ({"end": "ten"}, "end",
         "must be seconds (e.g. 90.5) or hh:mm:ss(.ms) (e.g. 00:01:30.5)"),
        ({"end": "nan"}, "end", "must be a finite number of seconds"),
        ({"end": "1:2:3:4"}, "end",
         "must be seconds (e.g. 90.5) or hh:mm:ss(.ms) (e.g. 00:01:30.5)"),
        ({"loudness_target": "-40"}, "loudness_target", "must be greater than or equal to -30"),
        ({"loudness_target": "0"}, "loudness_target", "must be less than or equal to -5"),
        ({"normalize": "maybe"}, "normalize", "must be true or false"),
        ({"audio_track": "-1"}, "audio_track", "must be greater than or equal to 0"),
        ({"year": "99"}, "year", "must be a four-digit year"),
        ({"year": "20245"}, "year", "must be a four-digit year"),
        ({"title": "x" * 201}, "title", "must have at most 200 characters"),
        ({"artist": "a\nb"}, "artist",
         "must not contain control characters (line breaks, tabs...)"),
        ({"cover": "yes"}, "cover", "must be one of none, frame"),
        ({"format": "wav", "bitrate": "128"}, "bitrate", "wav is lossless; bitrate does not apply"),
        ({"format": "flac", "quality": "2"}, "quality", "flac is lossless; quality does not apply"),
        ({"format": "m4a", "quality": "2"}, "quality",
         "quality is LAME's VBR scale for mp3; use bitrate for m4a"),
        ({"format": "opus", "sample_rate": "44100"}, "sample_rate",
         "opus is always encoded at 48000 Hz"),
        ({"format": "wav", "cover": "frame"}, "cover",
         "cover art can be embedded in mp3, m4a and flac, not wav"),
        ({"speed": "2"}, "speed", "is not a known option"),
    ],
)  # fmt: skip
def test_invalid_forms_name_the_field_and_the_reason(
    form: dict[str, str], field: str, reason: str
) -> None:
    with pytest.raises(InvalidOptions) as caught:
        ConversionOptions.from_form(form)
    error = caught.value
    assert isinstance(error, Unprocessable)
    assert error.status_code == 422
    assert error.code == OPTIONS_ERROR_CODE
    assert {"field": field, "reason": reason} in error.errors
    assert f"{field}: {reason}" in error.detail
    body = error.to_dict()
    assert body["code"] == str(OPTIONS_ERROR_CODE)
    assert body["errors"] == error.errors


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidOptions) as caught:
        ConversionOptions.from_form({"normalize": "perhaps", "bitrate": "7", "color": "red"})
    assert sorted(e["field"] for e in caught.value.errors) == ["bitrate", "color", "normalize"]


def test_options_are_frozen() -> None:
    options = ConversionOptions.from_form({})
    with pytest.raises(Exception, match="frozen"):
        options.format = "wav"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0.0), (1.5, 1.5), ("2", 2.0), ("00:00:01.5", 1.5), ("3:04", 184.0),
     ("1:00:00", 3600.0), ("0.0004", 0.0)],
)  # fmt: skip
def test_parse_seconds(value: object, seconds: float) -> None:
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize("value", [True, None, "inf", "-0:01", "1e9", [1]])
def test_parse_seconds_rejects(value: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each has its own message
        parse_seconds(value)


def test_format_properties() -> None:
    expected = {
        "mp3": ("mp3", "audio/mpeg", None),
        "m4a": ("m4a", "audio/mp4", 192),
        "opus": ("opus", "audio/ogg", 128),
        "flac": ("flac", "audio/flac", None),
        "wav": ("wav", "audio/wav", None),
    }
    for fmt, (extension, content_type, bitrate) in expected.items():
        options = ConversionOptions.from_form({"format": fmt})
        assert (options.output_extension, options.content_type) == (extension, content_type)
        assert options.target_bitrate == bitrate
    assert ConversionOptions.from_form({"bitrate": "64"}).vbr_quality is None
    assert ConversionOptions.from_form({"quality": "5"}).vbr_quality == 5
