"""Container sniffing on real FFmpeg output, and refusal of what is not media."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.media.sniff import SNIFF_BYTES, sniff_container
from tests.support.media import MediaFactory

LAVFI_TONE = ["-f", "lavfi", "-i", "sine=frequency=300:duration=1"]
LAVFI_VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1"]

CASES = [
    ("a.mp4", [*LAVFI_VIDEO, *LAVFI_TONE, "-c:v", "mpeg4", "-c:a", "aac"], "mp4"),
    ("a.mkv", [*LAVFI_VIDEO, *LAVFI_TONE, "-c:v", "mpeg4", "-c:a", "aac"], "matroska"),
    ("a.webm", [*LAVFI_TONE, "-c:a", "libvorbis"], "matroska"),
    ("a.avi", [*LAVFI_VIDEO, *LAVFI_TONE, "-c:v", "mpeg4", "-c:a", "mp3"], "avi"),
    ("a.flv", [*LAVFI_VIDEO, *LAVFI_TONE, "-c:v", "flv", "-c:a", "mp3"], "flv"),
    ("a.ts", [*LAVFI_VIDEO, *LAVFI_TONE, "-c:v", "mpeg2video", "-c:a", "mp2"], "mpegts"),
    (
        "a.mpg",
        [*LAVFI_VIDEO, *LAVFI_TONE, "-c:v", "mpeg2video", "-c:a", "mp2", "-f", "vob"],
        "mpeg",
    ),
    ("a.wmv", [*LAVFI_VIDEO, *LAVFI_TONE, "-c:v", "wmv2", "-c:a", "wmav2"], "asf"),
    ("a.ogg", [*LAVFI_TONE, "-c:a", "libvorbis"], "ogg"),
    ("a.wav", [*LAVFI_TONE], "wav"),
    ("a.flac", [*LAVFI_TONE], "flac"),
    ("a.mp3", [*LAVFI_TONE, "-c:a", "libmp3lame"], "mp3"),
    (
        "a.3gp",
        [*LAVFI_VIDEO, *LAVFI_TONE, "-c:v", "mpeg4", "-c:a", "aac", "-ar", "8000", "-ac", "1"],
        "mp4",
    ),
]


@pytest.mark.parametrize(("name", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_recognises_real_containers(
    media: MediaFactory, name: str, args: list[str], expected: str
) -> None:
    path = media.make(f"sniff_{name}", args)
    with path.open("rb") as f:
        assert sniff_container(f.read(SNIFF_BYTES)) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"hello, this is a text file\n" * 10,
        b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n",
        b"ffconcat version 1.0\nfile '/etc/passwd'\n",
        b"PK\x03\x04" + b"\0" * 100,
        b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
        b"%PDF-1.7\n",
        b"<html><body>no</body></html>",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
    ],
)
def test_refuses_what_is_not_media(head: bytes) -> None:
    assert sniff_container(head) is None


def test_shared_media_is_recognised(shared_media: Path) -> None:
    assert sniff_container((shared_media / "bigbuckbunny.mp4").read_bytes()[:SNIFF_BYTES]) == "mp4"
    assert sniff_container((shared_media / "cityCC0.mpg").read_bytes()[:SNIFF_BYTES]) == "mpeg"
