"""Files under VAR_DIR that hold user data are the owner's alone: auth.db, the mail sink's."""

from __future__ import annotations

import asyncio
import io
import smtplib
import stat
from email.message import EmailMessage
from pathlib import Path

from services.notification.sink import MailSink
from tests.support.stack import Stack


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_user_store_is_owner_only(stack: Stack) -> None:
    # The security stack keeps its users in SQLite under VAR_DIR, as `up` does.
    databases = list(Path(stack.env["VAR_DIR"]).glob("auth.db*"))
    assert databases, "no auth.db under VAR_DIR"
    for path in databases:
        assert mode(path) & 0o077 == 0, (path, oct(mode(path)))


async def test_the_mail_sink_keeps_mail_owner_only(tmp_path: Path) -> None:
    sink = MailSink(tmp_path / "mail", port=0, out=io.StringIO())
    await sink.start()
    try:
        message = EmailMessage()
        message["From"] = "a@example.com"
        message["To"] = "b@example.com"
        message["Subject"] = "your file is ready"
        message.set_content("https://example.com/v1/downloads/secret")

        def send() -> None:
            with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
                smtp.send_message(message)

        await asyncio.to_thread(send)
    finally:
        await sink.stop()
    mails = list((tmp_path / "mail").glob("*.eml"))
    assert len(mails) == 1
    assert mode(tmp_path / "mail") == 0o700
    assert mode(mails[0]) == 0o600
