"""The CLI's progress bars, as a terminal shows them."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from services.cli.convert import FileJob, Reporter


def rendered(reporter: Reporter) -> str:
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=120).print(reporter.progress.get_renderable())
    return out.getvalue()


def test_the_upload_counts_bytes_and_the_conversion_percent() -> None:
    # The conversion bar read `42/100 bytes` and `84 bytes/s`.
    reporter = Reporter(tty=True, console=Console(file=io.StringIO(), force_terminal=True))
    item = FileJob(source=Path("talk.mkv"), target=Path("talk.mp3"))
    reporter.add(item, 4 * 1024 * 1024)
    reporter.state(item, "uploading")
    reporter.advance(item, 1024 * 1024)
    uploading = rendered(reporter)
    assert "talk.mkv: uploading" in uploading
    assert " 25%" in uploading
    assert "1.0/4.2 MB" in uploading

    reporter.state(item, "converting", 42)
    converting = rendered(reporter)
    assert "talk.mkv: converting" in converting
    assert " 42%" in converting
    assert "bytes" not in converting
    assert "/s" not in converting
    assert "MB" not in converting
