"""What a libav process and its parent say to each other, over the child's stdin and stdout.

Each frame is one kind byte, a 4-byte big-endian length and the payload. The parent sends a
REQUEST (JSON, see `libav_process.answer`) and, while probing a blob it holds, answers each
READ (JSON `[lo, hi]`) with a BLOCK or, if its store failed, with UNAVAILABLE. A copy sends
PROGRESS (JSON: seconds copied) now and then. Every request ends with the child's ANSWER
(JSON: `{"info": ...}`, `{"done": true}` or `{"error": ...}`).

JSON, not pickle: the child parses hostile files, and what it says must not be able to run
code in the parent.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, fields
from typing import IO, Any

from services.converter.probe import MediaInfo, TrackActivity
from shared.jobs import AudioTrack

REQUEST = b"Q"
READ = b"R"
BLOCK = b"B"
UNAVAILABLE = b"U"
PROGRESS = b"P"
ANSWER = b"A"

HEADER = struct.Struct(">cI")
# A block is at most the blob reader's block size; a description is a few KiB (tags included).
MAX_FRAME = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The other side sent something that is not a frame of ours."""


def write_frame(stream: IO[bytes], kind: bytes, payload: bytes) -> None:
    stream.write(HEADER.pack(kind, len(payload)) + payload)
    stream.flush()


def read_frame(stream: IO[bytes]) -> tuple[bytes, bytes] | None:
    """The next frame, or None at the end of the stream (the other side is gone)."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    kind, length = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"a frame of {length} bytes")
    payload = stream.read(length)
    if len(payload) < length:
        return None
    return kind, payload


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def info_to_wire(info: MediaInfo) -> dict[str, Any]:
    wire = {f.name: getattr(info, f.name) for f in fields(info)}
    wire["audio_tracks"] = [track.model_dump(mode="json") for track in info.audio_tracks]
    wire["activity"] = [asdict(activity) for activity in info.activity]
    return wire


def info_from_wire(wire: Any) -> MediaInfo:
    """The description the child sent; ProtocolError if it is not one."""
    try:
        values = dict(wire)
        values["audio_tracks"] = [AudioTrack.model_validate(t) for t in wire["audio_tracks"]]
        values["activity"] = [TrackActivity(**a) for a in wire["activity"]]
        return MediaInfo(**values)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"not a media description: {exc}") from None
