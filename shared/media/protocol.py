"""What a libav process and its parent say to each other, over the child's stdin and stdout.

Each frame is one kind byte, a 4-byte big-endian length and the payload. The parent sends a
REQUEST (one of `Request`) and, while probing a blob it holds, answers each READ (`[lo, hi]`)
with a BLOCK or, if its store failed, with UNAVAILABLE. A copy sends PROGRESS (seconds copied)
now and then. Every request ends with the child's ANSWER: the operation's own answer model, or
`Failed`.

JSON validated by pydantic, not pickle: the child parses hostile files, and what it says must
not be able to run code in the parent, nor reach it as anything but one of these models.
"""

from __future__ import annotations

import json
import os
import struct
from typing import IO, Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    TypeAdapter,
)

from shared.errors import ErrorCode
from shared.media.info import MediaInfo, OutputMedia

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


# Made absolute where the request is made: the child may have been started in another working
# directory.
LocalPath = Annotated[str, AfterValidator(os.path.abspath)]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProbeFile(_Message):
    """Describe an upload on this host's disk (an absolute path)."""

    op: Literal["probe_file"] = "probe_file"
    path: LocalPath


class ProbeBlob(_Message):
    """Describe an upload the parent holds: the child READs its blocks."""

    op: Literal["probe_blob"] = "probe_blob"
    size: NonNegativeInt


class Inspect(_Message):
    """Describe an output we wrote (its cover picture came from the user)."""

    op: Literal["inspect"] = "inspect"
    path: LocalPath
    format: str


class Copy(_Message):
    """Stream-copy an upload's MP3 track into an MP3 file, with these tags only."""

    op: Literal["copy"] = "copy"
    source: LocalPath
    output: LocalPath
    format: str
    track: NonNegativeInt
    tags: dict[str, str]


Request = Annotated[ProbeFile | ProbeBlob | Inspect | Copy, Discriminator("op")]


class Described(_Message):
    op: Literal["probe"] = "probe"
    info: MediaInfo


class Inspected(_Message):
    op: Literal["inspect"] = "inspect"
    media: OutputMedia


class Copied(_Message):
    op: Literal["copy"] = "copy"


FailureKind = Literal["missing", "media", "unavailable", "failed"]


class Failed(_Message):
    """The request failed: `missing` (no such file), `media` (the file's fault: `code`),
    `unavailable` (the parent could not give a block), `failed` (anything else)."""

    op: Literal["failed"] = "failed"
    kind: FailureKind
    code: ErrorCode | None = None
    detail: str = ""


Answer = Annotated[Described | Inspected | Copied | Failed, Discriminator("op")]

requests: TypeAdapter[ProbeFile | ProbeBlob | Inspect | Copy] = TypeAdapter(Request)
answers: TypeAdapter[Described | Inspected | Copied | Failed] = TypeAdapter(Answer)
# A READ is a range of the blob; PROGRESS the seconds copied (a finite number).
ranges: TypeAdapter[tuple[NonNegativeInt, NonNegativeInt]] = TypeAdapter(
    tuple[NonNegativeInt, NonNegativeInt]
)
seconds: TypeAdapter[float] = TypeAdapter(Annotated[float, Field(allow_inf_nan=False)])


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


def encode(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
