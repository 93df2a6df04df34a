"""Test media made with FFmpeg's lavfi sources, and a decoder to check outputs."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import av

from services.converter.probe import codec_name
from shared.ffmpeg_path import ffmpeg_executable


@dataclass
class Decoded:
    codec: str
    channels: int
    sample_rate: int
    duration: float


def decode(path: Path) -> Decoded:
    """Decode every audio frame (so a corrupt file fails) and report what came out."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = 0
        for frame in container.decode(stream):
            samples += frame.samples
        return Decoded(
            codec=codec_name(stream) or "unknown",
            channels=stream.codec_context.channels,
            sample_rate=stream.codec_context.sample_rate,
            duration=samples / stream.codec_context.sample_rate,
        )


class MediaFactory:
    def __init__(self, root: Path) -> None:
        self.root = root

    def make(self, name: str, args: list[str]) -> Path:
        out = self.root / name
        if not out.exists():
            subprocess.run(
                [ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y", *args, str(out)],
                check=True,
                timeout=600,
            )
        return out

    def h264_aac(self, seconds: float = 10, name: str | None = None, size: str = "320x240") -> Path:
        """An H.264/AAC MP4 with a tone, like a phone video."""
        return self.make(
            name or f"h264_aac_{seconds}s_{size}.mp4",
            [
                "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
                "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
                "-ac", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                "-c:a", "aac", "-b:a", "128k", "-shortest",
            ],
        )  # fmt: skip

    def video_only(self, seconds: float = 3) -> Path:
        return self.make(
            f"video_only_{seconds}s.mp4",
            [
                "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=25:duration={seconds}",
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            ],
        )  # fmt: skip
