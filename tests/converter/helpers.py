"""Helpers shared by the converter's media tests: run the entry point, read an output back."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mutagen.flac
import mutagen.id3
import mutagen.mp4

from services.converter.pipeline import ConversionResult, convert
from shared.ffmpeg_path import ffmpeg_executable
from shared.media import MediaPool
from shared.options import ConversionOptions
from tests.support.media import MediaFactory

FFMPEG = ffmpeg_executable()
MP3_FRAME_SECONDS = 1152 / 44100


async def run_convert(
    libav: MediaPool,
    source: Path,
    workdir: Path,
    form: Mapping[str, str] | None = None,
    *,
    filename: str | None = None,
) -> ConversionResult:
    """Probe and convert like the service does, with options given as form strings."""
    workdir.mkdir(parents=True, exist_ok=True)
    info = await libav.probe(source)
    options = ConversionOptions.from_form(form or {})
    return await convert(
        source, workdir, info, options, libav=libav, ffmpeg=FFMPEG, filename=filename or source.name
    )


_INTEGRATED = re.compile(r"I:\s+(-?[\d.]+|-inf) LUFS")


def integrated_loudness(path: Path) -> float:
    """The file's EBU R128 integrated loudness, measured by FFmpeg's ebur128 scanner."""
    done = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostats", "-i", str(path),
         "-map", "0:a:0", "-af", "ebur128=framelog=quiet", "-f", "null", "-"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    found = _INTEGRATED.findall(done.stderr)
    assert found, done.stderr[-2000:]
    return float(found[-1])


def id3(path: Path) -> Any:
    """The file's ID3 tag (mutagen has no type hints, hence Any)."""
    return mutagen.id3.ID3(path)  # type: ignore[no-untyped-call]


def apic_frames(path: Path) -> list[Any]:
    frames: list[Any] = id3(path).getall("APIC")
    return frames


def mp4_tags(path: Path) -> Any:
    return mutagen.mp4.MP4(path).tags  # type: ignore[no-untyped-call]


def flac_pictures(path: Path) -> list[Any]:
    pictures: list[Any] = mutagen.flac.FLAC(path).pictures  # type: ignore[no-untyped-call]
    return pictures


def silent_flac(media: MediaFactory, seconds: int) -> Path:
    """Mono silence as FLAC: a few KB per minute, however long it claims to be."""
    return media.make(
        f"silence_{seconds}s.flac",
        ["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", str(seconds),
         "-c:a", "flac", "-compression_level", "8"],
    )  # fmt: skip


def lying_flac(media: MediaFactory, seconds: int, claims: int) -> Path:
    """`seconds` of silence whose STREAMINFO says it lasts `claims` seconds: probes short,
    decodes long (a decompression bomb for a lossless output)."""
    out = media.root / f"lying_{seconds}s_as_{claims}s.flac"
    if not out.exists():
        data = bytearray(silent_flac(media, seconds).read_bytes())
        # STREAMINFO after "fLaC" and its block header: 10 bytes of block and frame sizes,
        # then 20 bits of rate, 3 of channels, 5 of depth and 36 of total samples.
        packed = int.from_bytes(data[18:26], "big")
        rate = packed >> 44
        packed = (packed >> 36 << 36) | (rate * claims)
        data[18:26] = packed.to_bytes(8, "big")
        out.write_bytes(data)
    return out
