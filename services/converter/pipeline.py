"""The media side of one job in one call: plan, (measure,) (grab a cover,) write, check.

`convert` is what the converter's service calls; everything it decides comes from
`plan.plan_conversion`, every process it runs goes through `ffmpeg.run_ffmpeg`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from services.converter import loudness
from services.converter.ffmpeg import run_ffmpeg, timeout_for
from services.converter.loudness import Gain, Measurement, gain_for, parse_summary
from services.converter.plan import (
    STDIN,
    ConversionPath,
    ConversionPlan,
    Source,
    build_cover_command,
    build_loudness_command,
    build_measure_command,
    build_output_command,
    plan_conversion,
)
from services.converter.remux import copies_in_process, copy_mp3
from services.converter.source import StoredSource
from shared.errors import ErrorCode, MediaError
from shared.jobs import Loudness, OutputInfo
from shared.media import MediaInfo, MediaPool, OutputMedia
from shared.media.fit import Limits
from shared.options import ConversionOptions

log = logging.getLogger(__name__)

FractionCallback = Callable[[float], Awaitable[None]]
"""Receives the share of the whole conversion done, 0.0..1.0, never decreasing."""

COVER_TIMEOUT = 60.0
# FFmpeg stops at `-fs` with the file at about that size: the last packet may fall short of it.
CAP_MARGIN_BYTES = 64 * 1024
MIN_STEP_TIMEOUT = 1.0


@dataclass(frozen=True)
class ConversionResult:
    output: Path
    media: OutputMedia
    path: ConversionPath
    """"copy" when the source's MP3 stream was kept as is, else "encode"."""
    extension: str
    content_type: str
    track: int
    """The audio track converted (position among the source's audio streams)."""
    tags: dict[str, str] = field(default_factory=dict)
    cover: bool = False
    """Whether a cover picture was embedded."""
    measured_loudness: float | None = None
    """The source's integrated loudness (LUFS) when normalising."""
    loudness: Loudness | None = None
    """The output's loudness when normalised and long enough to measure."""
    loudness_note: str | None = None
    """Why a normalised output has no `loudness`."""

    def to_output_info(self, size: int, filename: str) -> OutputInfo:
        info = self.media.to_output_info(size, filename, self.content_type)
        return info.model_copy(
            update={"loudness": self.loudness, "loudness_note": self.loudness_note}
        )


async def convert(
    source: Path | StoredSource,
    workdir: Path,
    info: MediaInfo,
    options: ConversionOptions,
    *,
    libav: MediaPool,
    ffmpeg: str,
    filename: str,
    on_progress: FractionCallback | None = None,
    timeout: float | None = None,
    limits: Limits | None = None,
) -> ConversionResult:
    """Convert `source` (already probed as `info`) as `options` ask; the result lives in `workdir`.

    A local `source` is read in place. A `StoredSource` is piped into FFmpeg as it is fetched
    when the container reads front to back and one pass from the start does the job (no
    loudness measurement, no cover frame, no start offset); otherwise, or if the piped run
    fails, it is copied into `workdir` first.

    `filename` is the upload's name (the title when no tag gives one). `timeout` bounds the
    whole conversion, every pass included. Raises MediaError with a stable code for anything
    the file or the options cause; FFmpeg never outlives a cancellation or a timeout.
    `limits` bound the source's length (`source_too_long`) and the output's length and size
    (`output_too_large`).
    """
    plan = plan_conversion(info, options, filename, limits)
    if timeout is None:
        timeout = timeout_for(plan.expected_duration or info.duration, plan.passes)
    deadline = time.monotonic() + timeout
    progress = _Progress(on_progress, plan)
    output = workdir / f"output.{options.output_extension}"

    if isinstance(source, StoredSource):
        if _pipeable(info, plan):
            media = await _try_piped(ffmpeg, libav, source, output, info, plan, progress, deadline)
            if media is not None:
                return _result(output, media, plan, options, None, None)
        source = await _local_copy(source, workdir)

    cover = await _grab_cover(ffmpeg, source, workdir, info, plan, deadline)

    measured: Measurement | None = None
    gain: Gain | None = None
    if plan.normalize:
        measured, gain = await _choose_gain(ffmpeg, source, info, plan, progress, deadline)

    media = await _write_output(
        ffmpeg, libav, source, output, info, plan, progress, deadline, gain=gain, cover=cover
    )
    result = _result(output, media, plan, options, cover, measured)
    if plan.normalize:
        result = await _with_loudness(ffmpeg, result, measured, deadline)
    return result


async def _measure(
    ffmpeg: str,
    source: Path,
    info: MediaInfo,
    plan: ConversionPlan,
    progress: _Progress,
    deadline: float,
    gain: Gain | None = None,
) -> Measurement:
    stderr = await run_ffmpeg(
        build_measure_command(ffmpeg, source, info, plan, gain),
        duration=plan.expected_duration,
        on_progress=progress.stage(0),
        timeout=_remaining(deadline),
    )
    return parse_summary(stderr)


async def _choose_gain(
    ffmpeg: str,
    source: Path,
    info: MediaInfo,
    plan: ConversionPlan,
    progress: _Progress,
    deadline: float,
) -> tuple[Measurement, Gain | None]:
    """The source's loudness and the gain that takes it to the target. A plain gain lands
    exactly; one that needs the limiter is tried on the signal and corrected for what the
    limiter took away."""
    measured = await _measure(ffmpeg, source, info, plan, progress, deadline)
    gain = gain_for(plan.loudness_target, measured)
    correction = 0.0
    for _ in range(loudness.MAX_CORRECTIONS):
        if gain is None or not gain.limit:
            break
        trial = await _measure(ffmpeg, source, info, plan, progress, deadline, gain)
        missed = plan.loudness_target - trial.integrated
        if abs(missed) <= loudness.TOLERANCE or trial.silent:
            break
        correction += missed
        gain = gain_for(plan.loudness_target, measured, correction)
    return measured, gain


async def _with_loudness(
    ffmpeg: str, result: ConversionResult, measured: Measurement | None, deadline: float
) -> ConversionResult:
    """The result with its output's own loudness, or the reason it has none."""
    if measured is None or measured.silent:
        return replace(result, loudness_note=loudness.SILENT)
    if (result.media.duration or 0.0) < loudness.MIN_MEASURABLE_SECONDS:
        return replace(result, loudness_note=loudness.TOO_SHORT)
    stderr = await run_ffmpeg(
        build_loudness_command(ffmpeg, result.output),
        duration=None,
        on_progress=None,
        timeout=_remaining(deadline),
    )
    reading = parse_summary(stderr)
    if reading.silent or not math.isfinite(reading.true_peak):
        return replace(result, loudness_note=loudness.SILENT)
    return replace(
        result,
        loudness=Loudness(
            integrated_lufs=round(reading.integrated, 1),
            true_peak_dbtp=round(reading.true_peak, 1),
        ),
    )


def _pipeable(info: MediaInfo, plan: ConversionPlan) -> bool:
    return info.sequential and plan.passes == 1 and plan.cover_at is None and plan.start is None


async def _try_piped(
    ffmpeg: str,
    libav: MediaPool,
    stored: StoredSource,
    output: Path,
    info: MediaInfo,
    plan: ConversionPlan,
    progress: _Progress,
    deadline: float,
) -> OutputMedia | None:
    """The piped run's output, or None when it failed for a reason a local copy may not have."""
    try:
        return await _write_output(
            ffmpeg, libav, STDIN, output, info, plan, progress, deadline, stdin=stored.chunks()
        )
    except MediaError as exc:
        if exc.code is ErrorCode.TIMEOUT:
            raise
        # A demuxer that needed a seek after all, or a damaged file: the copy either converts
        # it or fails with the file's own reason.
        log.info("piped conversion failed (%s); retrying from a local copy", exc.detail)
        return None


async def _local_copy(stored: StoredSource, workdir: Path) -> Path:
    return await stored.copy_to(workdir / "source")


async def _write_output(
    ffmpeg: str,
    libav: MediaPool,
    source: Source,
    output: Path,
    info: MediaInfo,
    plan: ConversionPlan,
    progress: _Progress,
    deadline: float,
    *,
    gain: Gain | None = None,
    cover: Path | None = None,
    stdin: AsyncIterator[bytes] | None = None,
) -> OutputMedia:
    in_process = stdin is None and copies_in_process(source, info, plan, cover)
    if in_process:
        assert isinstance(source, Path)
        await copy_mp3(
            libav,
            source,
            output,
            info,
            plan,
            on_progress=progress.stage(plan.passes - 1),
            timeout=_remaining(deadline),
        )
    else:
        await run_ffmpeg(
            build_output_command(ffmpeg, source, output, info, plan, gain=gain, cover=cover),
            duration=plan.expected_duration,
            on_progress=progress.stage(plan.passes - 1),
            timeout=_remaining(deadline),
            stdin=stdin,
        )
    media = await libav.inspect(output, plan.format)
    await _check_caps(output, media, plan)
    if media.duration is None or media.duration <= 0:
        raise MediaError(
            f"audio track {plan.track} holds no sound to convert", code=ErrorCode.NO_AUDIO_STREAM
        )
    log.info(
        "converted track %d via %s to %s (%.1f s%s%s%s)",
        plan.track,
        plan.path,
        plan.format,
        media.duration,
        ", with cover" if cover else "",
        ", piped" if stdin is not None else "",
        ", in process" if in_process else "",
    )
    return media


async def _check_caps(output: Path, media: OutputMedia, plan: ConversionPlan) -> None:
    """An output cut at its `-t` or `-fs` cap came from a source longer than it claimed."""
    size = await asyncio.to_thread(lambda: output.stat().st_size)
    at_size_cap = plan.max_bytes is not None and size >= plan.max_bytes - CAP_MARGIN_BYTES
    at_time_cap = media.duration is not None and media.duration >= plan.max_seconds - 1.0
    if at_size_cap or at_time_cap:
        raise MediaError(
            "the file holds far more audio than it says; it was not converted",
            code=ErrorCode.OUTPUT_TOO_LARGE,
        )


def _result(
    output: Path,
    media: OutputMedia,
    plan: ConversionPlan,
    options: ConversionOptions,
    cover: Path | None,
    measured: Measurement | None,
) -> ConversionResult:
    return ConversionResult(
        output=output,
        media=media,
        path=plan.path,
        extension=options.output_extension,
        content_type=options.content_type,
        track=plan.track,
        tags=plan.tags,
        cover=cover is not None,
        measured_loudness=measured.integrated if measured else None,
    )


async def _grab_cover(
    ffmpeg: str,
    source: Path,
    workdir: Path,
    info: MediaInfo,
    plan: ConversionPlan,
    deadline: float,
) -> Path | None:
    """A JPEG of the video at 10 %, or None: a missing cover never fails the conversion."""
    if plan.cover_at is None:
        return None
    target = workdir / "cover.jpg"
    try:
        await run_ffmpeg(
            build_cover_command(ffmpeg, source, info, plan.cover_at, target),
            duration=None,
            on_progress=None,
            timeout=min(COVER_TIMEOUT, _remaining(deadline)),
        )
    except MediaError as exc:
        if exc.code is ErrorCode.TIMEOUT:
            raise
        log.warning("no cover frame: %s", exc.detail)
        return None
    exists = await asyncio.to_thread(lambda: target.is_file() and target.stat().st_size > 0)
    return target if exists else None


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise MediaError("conversion took too long", code=ErrorCode.TIMEOUT)
    return max(MIN_STEP_TIMEOUT, left)


class _Progress:
    """Maps each pass's seconds onto one 0..1 scale: with normalising, measuring is the first
    half and writing the second, so the job's percentage never jumps back."""

    def __init__(self, callback: FractionCallback | None, plan: ConversionPlan) -> None:
        self.callback = callback
        self.passes = plan.passes
        self.duration = plan.expected_duration
        self.reported = -1.0

    def stage(self, index: int) -> Callable[[float], Awaitable[None]] | None:
        if self.callback is None or not self.duration:
            return None
        duration = self.duration

        async def report(seconds: float) -> None:
            done = min(1.0, max(0.0, seconds / duration))
            fraction = (index + done) / self.passes
            if fraction > self.reported and self.callback is not None:
                self.reported = fraction
                await self.callback(fraction)

        return report
