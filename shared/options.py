"""What a user may ask of one conversion: format, quality, trim, loudness, track, tags, cover.

One model, validated once at the gateway (from the upload's form fields) and again by the
converter (from the job document's echo), so both sides agree on what a request means.

Rules that depend on more than one field:
- `bitrate` (CBR) and `quality` (LAME VBR) exclude each other; neither means VBR 2 for mp3.
- `quality` is LAME's scale, so it applies to mp3 only; m4a and opus take `bitrate`
  (their defaults: 192 and 128 kbit/s). flac and wav are lossless: neither applies.
- opus is always 48000 Hz, so `sample_rate` may be `keep` or 48000 there.
- `cover` can be embedded in mp3 (APIC), m4a (covr) and flac (PICTURE) only.
- `channels` is the most the output may have: wider sources are downmixed, a mono source
  stays mono (an upmix would only double the size with the same sound). Speaker layouts are
  mixed by FFmpeg's standard matrix; 9 or more channels that name no speakers (multitrack
  recorders) are mixed with equal weights, every channel into every output channel; an
  ambisonic sound field (360° video) is heard through its omnidirectional channel (W).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.errors import ErrorCode, Unprocessable

OutputFormat = Literal["mp3", "m4a", "opus", "flac", "wav"]
SampleRate = Literal["keep", 44100, 48000]
Cover = Literal["none", "frame"]

BITRATES = (64, 96, 128, 160, 192, 256, 320)
DEFAULT_VBR_QUALITY = 2
DEFAULT_BITRATES: dict[str, int] = {"m4a": 192, "opus": 128}
LOSSY_FORMATS = frozenset({"mp3", "m4a", "opus"})
COVER_FORMATS = frozenset({"mp3", "m4a", "flac"})
OPUS_SAMPLE_RATE = 48000
MAX_TAG_LENGTH = 200
MAX_SECONDS = 100 * 3600.0
DEFAULT_LOUDNESS_TARGET = -14.0
TAG_FIELDS = ("title", "artist", "album", "year", "genre")

# Until ErrorCode gains INVALID_OPTIONS ("invalid_options"), option errors use the generic code;
# adding the member to shared/errors.py switches every option error over with no other edit.
OPTIONS_ERROR_CODE = ErrorCode.INVALID_OPTIONS

CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "wav": "audio/wav",
}

_TRUE = frozenset({"true", "1", "on", "yes"})
_FALSE = frozenset({"false", "0", "off", "no"})
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidOptions(Unprocessable):
    """A 422 naming every offending field; `errors` is `[{"field": ..., "reason": ...}]`."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors) or "invalid options"
        super().__init__(detail, code=OPTIONS_ERROR_CODE)
        self.errors = errors

    def to_dict(self) -> dict[str, Any]:
        """The HTTP body: the usual detail and code, plus the per-field list."""
        return {**super().to_dict(), "errors": self.errors}


class _Conflicts(ValueError):
    """Raised by the model validator so each cross-field problem keeps its field name."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))
        self.problems = problems


def parse_seconds(value: object) -> float:
    """Seconds from a number, "12.5", "mm:ss" or "hh:mm:ss(.ms)"; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("must be seconds or hh:mm:ss(.ms)")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_time_text(value.strip())
    else:
        raise ValueError("must be seconds or hh:mm:ss(.ms)")
    if not math.isfinite(seconds):
        raise ValueError("must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds > MAX_SECONDS:
        raise ValueError(f"must be at most {MAX_SECONDS:.0f} seconds")
    return round(seconds, 3)


def _parse_time_text(text: str) -> float:
    match = _CLOCK.match(text)
    if match:
        hours, minutes, seconds = match.group(1, 2, 3)
        if int(minutes) >= 60 and hours is not None:
            raise ValueError("minutes must be below 60 in hh:mm:ss")
        if float(seconds) >= 60:
            raise ValueError("seconds must be below 60 in mm:ss or hh:mm:ss")
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    try:
        return float(text)
    except ValueError:
        raise ValueError("must be seconds (e.g. 90.5) or hh:mm:ss(.ms) (e.g. 00:01:30.5)") from None


def _int_from_text(value: object) -> object:
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value.strip())
    return value


class ConversionOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: OutputFormat = "mp3"
    bitrate: int | None = None
    """CBR kbit/s, one of BITRATES."""
    quality: int | None = Field(default=None, ge=0, le=9)
    """LAME VBR quality, 0 (best) to 9; mp3 only."""
    sample_rate: SampleRate = "keep"
    channels: Literal[1, 2] = 2
    start: float | None = None
    end: float | None = None
    normalize: bool = False
    loudness_target: float = Field(default=DEFAULT_LOUDNESS_TARGET, ge=-30, le=-5)
    """Integrated loudness in LUFS for `normalize`."""
    audio_track: int | None = Field(default=None, ge=0, le=255)
    """Position among the source's audio streams (0 = the first audio stream)."""
    title: str | None = Field(default=None, max_length=MAX_TAG_LENGTH)
    artist: str | None = Field(default=None, max_length=MAX_TAG_LENGTH)
    album: str | None = Field(default=None, max_length=MAX_TAG_LENGTH)
    year: int | None = None
    genre: str | None = Field(default=None, max_length=MAX_TAG_LENGTH)
    cover: Cover = "none"

    @field_validator("bitrate", "quality", "channels", "audio_track", "year", mode="before")
    @classmethod
    def _integers_from_text(cls, value: object) -> object:
        return _int_from_text(value)

    @field_validator("sample_rate", mode="before")
    @classmethod
    def _sample_rate_from_text(cls, value: object) -> object:
        return _int_from_text(value)

    @field_validator("bitrate")
    @classmethod
    def _known_bitrate(cls, value: int | None) -> int | None:
        if value is not None and value not in BITRATES:
            allowed = ", ".join(str(b) for b in BITRATES)
            raise ValueError(f"must be one of {allowed} (kbit/s)")
        return value

    @field_validator("year")
    @classmethod
    def _four_digit_year(cls, value: int | None) -> int | None:
        if value is not None and not 1000 <= value <= 9999:
            raise ValueError("must be a four-digit year")
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> float | None:
        if value is None:
            return None
        return parse_seconds(value)

    @field_validator("title", "artist", "album", "genre", mode="before")
    @classmethod
    def _clean_tag(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip()
        if _CONTROL.search(value):
            raise ValueError("must not contain control characters (line breaks, tabs...)")
        return value or None

    @model_validator(mode="after")
    def _consistent(self) -> ConversionOptions:
        problems: list[tuple[str, str]] = []
        if self.bitrate is not None and self.quality is not None:
            problems.append(
                ("quality", "give either bitrate (constant) or quality (VBR), not both")
            )
        if self.format not in LOSSY_FORMATS:
            for name in ("bitrate", "quality"):
                if getattr(self, name) is not None:
                    problems.append((name, f"{self.format} is lossless; {name} does not apply"))
        elif self.format != "mp3" and self.quality is not None:
            problems.append(
                ("quality", f"quality is LAME's VBR scale for mp3; use bitrate for {self.format}")
            )
        if self.format == "opus" and self.sample_rate not in ("keep", OPUS_SAMPLE_RATE):
            problems.append(("sample_rate", "opus is always encoded at 48000 Hz"))
        if self.cover != "none" and self.format not in COVER_FORMATS:
            problems.append(
                ("cover", f"cover art can be embedded in mp3, m4a and flac, not {self.format}")
            )
        if self.start is not None and self.end is not None and self.end <= self.start:
            problems.append(("end", "must be after start"))
        if self.end is not None and self.end <= 0:
            problems.append(("end", "must be after the beginning of the file"))
        if problems:
            raise _Conflicts(problems)
        return self

    # --- parsing from the outside ---

    @classmethod
    def from_form(cls, fields: Mapping[str, str]) -> ConversionOptions:
        """Options from multipart form strings; an empty value means "not given".

        Raises InvalidOptions naming each bad field (unknown fields included).
        """
        values: dict[str, object] = {}
        errors: list[dict[str, str]] = []
        for name, raw in fields.items():
            text = raw.strip() if isinstance(raw, str) else raw
            if text == "":
                continue
            if name == "normalize" and isinstance(text, str):
                lowered = text.lower()
                if lowered in _TRUE:
                    values[name] = True
                elif lowered in _FALSE:
                    values[name] = False
                else:
                    errors.append({"field": name, "reason": "must be true or false"})
                continue
            values[name] = text
        if errors:
            # Report every field at once, so collect the model's own complaints too.
            try:
                cls.parse(values)
            except InvalidOptions as more:
                errors.extend(more.errors)
            raise InvalidOptions(errors)
        return cls.parse(values)

    @classmethod
    def parse(cls, values: Mapping[str, object]) -> ConversionOptions:
        """Validate a mapping (JSON, or the job document's echo); InvalidOptions on errors."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise InvalidOptions(_field_errors(exc)) from None

    # --- what the rest of the system reads ---

    def normalized(self) -> dict[str, Any]:
        """The options as the job document echoes them; `parse` accepts this back unchanged."""
        return self.model_dump(mode="json")

    @property
    def output_extension(self) -> str:
        return self.format

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @property
    def vbr_quality(self) -> int | None:
        """The LAME VBR quality an mp3 is encoded with, None when a CBR bitrate was asked."""
        if self.format != "mp3" or self.bitrate is not None:
            return None
        return DEFAULT_VBR_QUALITY if self.quality is None else self.quality

    @property
    def target_bitrate(self) -> int | None:
        """kbit/s for CBR mp3 and for m4a/opus (default when not given); None otherwise."""
        if self.bitrate is not None:
            return self.bitrate
        return DEFAULT_BITRATES.get(self.format)

    @property
    def trims(self) -> bool:
        return self.start is not None or self.end is not None

    @property
    def requested_tags(self) -> dict[str, str]:
        tags = {name: getattr(self, name) for name in TAG_FIELDS}
        return {name: str(value) for name, value in tags.items() if value is not None}


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    known = set(ConversionOptions.model_fields)
    errors: list[dict[str, str]] = []
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, _Conflicts):
            errors.extend({"field": f, "reason": r} for f, r in cause.problems)
            continue
        field = str(error["loc"][0]) if error["loc"] else "options"
        if error["type"] == "extra_forbidden":
            reason = "is not a known option"
        elif error["type"] == "literal_error" and field in known:
            reason = _literal_reason(field)
        elif isinstance(cause, ValueError):
            reason = str(cause)
        else:
            reason = _plain(error["msg"])
        errors.append({"field": field, "reason": reason})
    return errors


def _literal_reason(field: str) -> str:
    annotation = ConversionOptions.model_fields[field].annotation
    choices = ", ".join(str(choice) for choice in get_args(annotation))
    return f"must be one of {choices}"


def _plain(message: str) -> str:
    """Pydantic's "Input should be ..." reads as "must be ..." next to a field name."""
    replacements = (
        ("Input should be", "must be"),
        ("String should have", "must have"),
        ("Value error, ", ""),
    )
    for prefix, replacement in replacements:
        if message.startswith(prefix):
            return replacement + message[len(prefix) :]
    return message
