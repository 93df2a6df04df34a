"""The embedded mail sink of `video2mp3 up`, fed by the service's own mailer."""

from __future__ import annotations

import asyncio
import io
from email.message import EmailMessage
from pathlib import Path

from services.notification import templates
from services.notification.mailer import MailDeliveryError, SmtpMailer, compose
from services.notification.sink import MailSink, parse_message, run_sink
from tests.support.net import free_port
from tests.support.smtp import download_link

LINK = "http://127.0.0.1:8000/v1/downloads/job1.1999999999.mac"


def ready_mail(recipient: str = "ann@example.com") -> EmailMessage:
    content = templates.completed_mail("holiday.mp4", "holiday.mp3", LINK, 3600)
    return compose(content, sender="no-reply@example.com", recipient=recipient, message_key="k1")


async def test_sink_keeps_each_mail_as_an_eml_file_and_prints_its_link(tmp_path: Path) -> None:
    out = io.StringIO()
    sink = MailSink(tmp_path / "mail", port=0, out=out)
    await sink.start()
    try:
        mailer = SmtpMailer(sink.url, timeout=5)
        await mailer.send(ready_mail("ann@example.com"))
        await mailer.send(ready_mail("bob@example.com"))
    finally:
        await sink.stop()

    files = sorted((tmp_path / "mail").iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"], files
    first = parse_message(files[0].read_bytes())
    assert first["To"] == "ann@example.com"
    assert download_link(first) == LINK
    assert out.getvalue().splitlines() == [
        f"mail to ann@example.com: Your MP3 is ready: holiday.mp4 — {LINK}",
        f"mail to bob@example.com: Your MP3 is ready: holiday.mp4 — {LINK}",
    ]


async def test_run_sink_serves_until_cancelled(tmp_path: Path) -> None:
    port = free_port()
    task = asyncio.create_task(run_sink(tmp_path / "mail", "127.0.0.1", port))
    mailer = SmtpMailer(f"smtp://127.0.0.1:{port}", timeout=5)
    for _ in range(100):
        try:
            await mailer.send(ready_mail())
            break
        except MailDeliveryError:  # not listening yet
            await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1
