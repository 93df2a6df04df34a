"""Test media made with FFmpeg's lavfi sources, and a decoder to check outputs."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import av

from shared.ffmpeg_path import ffmpeg_executable
from shared.media.libav.probe import codec_name


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

    # --- the input matrix of issue 4 (added; the generators above are unchanged) ---

    def clip(
        self,
        name: str,
        *,
        video: list[str] | None,
        audio: list[str],
        seconds: float = 2,
        fmt: str | None = None,
        sample_rate: int = 44100,
        channels: int = 2,
        size: str = "96x64",
        extra: list[str] | None = None,
    ) -> Path:
        """A clip with a 440 Hz tone; `video`/`audio` are the codec options of each stream.

        `video=None` makes an audio-only file; `fmt` pins the muxer (so the name may lie).
        """
        inputs: list[str] = []
        maps: list[str] = []
        if video is not None:
            inputs += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=15:duration={seconds}"]
            maps += ["-map", "0:v"]
        inputs += [
            "-f", "lavfi",
            "-i", f"sine=frequency=440:sample_rate={sample_rate}:duration={seconds}",
        ]  # fmt: skip
        maps += ["-map", f"{1 if video is not None else 0}:a"]
        return self.make(
            name,
            [
                *inputs,
                *maps,
                *(video or []),
                *audio,
                "-ac", str(channels),
                *(extra or []),
                *(["-f", fmt] if fmt else []),
            ],
        )  # fmt: skip

    def mp3_in_avi(self, seconds: float = 4, name: str | None = None) -> Path:
        """MPEG-4 part 2 video with an MP3 track: the stream-copy fast path's input."""
        return self.clip(
            name or f"mpeg4_mp3_{seconds}s.avi",
            video=["-c:v", "mpeg4", "-q:v", "10"],
            audio=["-c:a", "libmp3lame", "-b:a", "128k"],
            seconds=seconds,
        )

    def tracks_with_empty_or_silent_first(self, kind: str) -> Path:
        """MKV whose first audio track is `empty` (no packets) or `silent` (digital zero),
        and whose second track carries the tone."""
        if kind == "empty":
            # A header-only WAV gives a track with parameters but not a single packet.
            first = self.make(
                "header_only.wav",
                ["-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "0", "-c:a", "pcm_s16le"],
            )
            first_input = ["-i", str(first)]
            first_codec = ["-c:a:0", "copy"]
        else:
            first_input = ["-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo:d=3"]
            first_codec = ["-c:a:0", "aac"]
        return self.make(
            f"first_track_{kind}.mkv",
            [
                "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=15:duration=3",
                *first_input,
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=3",
                "-map", "0:v", "-map", "1:a", "-map", "2:a",
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                *first_codec, "-c:a:1", "aac", "-ac:a:1", "2",
            ],
        )  # fmt: skip

    def surround(self, layout: str = "7.1", seconds: float = 2) -> Path:
        """Every channel of `layout` carrying the same quiet tone."""
        return self.make(
            f"surround_{layout}_{seconds}s.mka",
            [
                "-f", "lavfi",
                "-i", f"sine=frequency=330:sample_rate=48000:duration={seconds}",
                "-af", f"aformat=channel_layouts={layout}",
                "-c:a", "flac",
            ],
        )  # fmt: skip

    def long_tone(self) -> Path:
        """30 minutes of FLAC: small to upload, several seconds to encode."""
        return self.make(
            "tone_1800s.flac",
            [
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1800",
                "-c:a", "flac",
            ],
        )  # fmt: skip

    def tone(self, seconds: float, amplitude: float, name: str, sample_rate: int = 48000) -> Path:
        """A stereo 1 kHz tone at `amplitude` (1.0 = full scale) as FLAC, for loudness tests."""
        return self.make(
            name,
            [
                "-f", "lavfi",
                "-i", f"aevalsrc={amplitude}*sin(1000*2*PI*t):s={sample_rate}:d={seconds}",
                "-ac", "2", "-c:a", "flac",
            ],
        )  # fmt: skip
