"""Which tags an output carries: the request's, else the source's own, else the file name.

The source's metadata is never copied wholesale (`-map_metadata -1`): phone videos carry GPS
positions and device ids. Only the five music tags below are taken over, cleaned.
"""

from __future__ import annotations

import re
from pathlib import PurePath

from shared.media import MediaInfo
from shared.options import MAX_TAG_LENGTH, ConversionOptions

# Output tag names as FFmpeg's muxers understand them: ID3v2.4 (TIT2, TPE1, TALB, TDRC, TCON),
# MP4 (©nam, ©ART, ©alb, ©day, ©gen), Vorbis comments and RIFF INFO all map from these.
OUTPUT_KEYS = ("title", "artist", "album", "date", "genre")

# Where each tag may hide in a source's metadata, most specific first.
_SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "title": ("title",),
    "artist": ("artist", "album_artist", "performer", "author"),
    "album": ("album",),
    "date": ("date", "year", "original_date"),
    "genre": ("genre",),
}
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def resolve_tags(
    options: ConversionOptions, info: MediaInfo, track: int, filename: str
) -> dict[str, str]:
    """The tags to write, keyed by OUTPUT_KEYS; `title` is always present."""
    source = _source_tags(info, track)
    requested = options.requested_tags
    if "year" in requested:
        requested["date"] = requested.pop("year")
    tags: dict[str, str] = {}
    for key in OUTPUT_KEYS:
        value = requested.get(key) or source.get(key)
        if value:
            tags[key] = value
    if "title" not in tags:
        tags["title"] = _clean(PurePath(filename).stem) or "audio"
    return tags


def _source_tags(info: MediaInfo, track: int) -> dict[str, str]:
    layers = [info.tags]
    # In a video, a track's own title names the track ("Commentary"), not the work. In an
    # audio-only file (Ogg, Opus) the track's tags are the work's tags.
    if not info.has_video and track < len(info.track_tags):
        layers.append(info.track_tags[track])
    found: dict[str, str] = {}
    for key, candidates in _SOURCE_KEYS.items():
        for layer in layers:
            value = next((_clean(layer[c]) for c in candidates if layer.get(c)), "")
            if key == "date":
                year = _YEAR.search(value)
                value = year.group(1) if year else ""
            if value:
                found[key] = value
                break
    return found


def _clean(value: str) -> str:
    return _CONTROL.sub(" ", value).strip()[:MAX_TAG_LENGTH]


def metadata_args(tags: dict[str, str]) -> list[str]:
    args: list[str] = []
    for key in OUTPUT_KEYS:
        if key in tags:
            args += ["-metadata", f"{key}={tags[key]}"]
    return args
