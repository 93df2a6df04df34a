"""The embedded mail sink of `video2mp3 up`: an SMTP server that keeps mail as `.eml` files.

Used when no SMTP_URL is set, so that a newcomer sees their download links without configuring
a mail server: each mail is saved under `<VAR_DIR>/mail/` and announced on stdout with its link.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, TextIO

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)

DEFAULT_PORT = 8025
_LINK = re.compile(r"https?://[^\s<>\"']+")


def parse_message(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def first_link(message: EmailMessage) -> str | None:
    """The first http(s) URL of the mail, read from its plain-text part when it has one."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return None
    assert isinstance(part, EmailMessage)
    match = _LINK.search(part.get_content())
    return match.group(0) if match else None


def summary_line(message: EmailMessage, recipients: list[str]) -> str:
    line = f"mail to {', '.join(recipients)}: {message.get('Subject', '(no subject)')}"
    link = first_link(message)
    return f"{line} — {link}" if link else line


def write_atomically(directory: Path, name: str, data: bytes) -> Path:
    """Write to a temporary file beside the target, then rename: a reader never sees half a mail."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = directory / name
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".incoming-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def eml_name(now: datetime) -> str:
    """Names sort by arrival: a timestamp first, a random part so that none collide."""
    return f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:8]}.eml"


class _SinkHandler:
    """aiosmtpd calls `handle_DATA` once per mail, after the whole message has arrived."""

    def __init__(self, mail_dir: Path, out: TextIO) -> None:
        self._mail_dir = mail_dir
        self._out = out

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        recipients = [str(r) for r in envelope.rcpt_tos]
        try:
            path = await asyncio.to_thread(
                write_atomically, self._mail_dir, eml_name(datetime.now(UTC)), raw
            )
        except OSError as exc:
            log.error("mail sink could not store a mail: %s", exc)
            return "451 Requested action aborted: local error in processing"
        line = summary_line(parse_message(raw), recipients)
        print(line, file=self._out, flush=True)
        log.debug("mail stored as %s", path)
        return "250 Message accepted for delivery"


class MailSink:
    """An SMTP server on the running event loop; `port=0` picks a free port (see `.port`)."""

    def __init__(
        self,
        mail_dir: Path,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        out: TextIO | None = None,
    ) -> None:
        self.mail_dir = mail_dir
        self.host = host
        self._port = port
        self._handler = _SinkHandler(mail_dir, out or sys.stdout)
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        bound: Any = self._server.sockets[0].getsockname()
        return int(bound[1])

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def start(self) -> None:
        # Mails hold addresses and download links: the directory is the owner's alone (the
        # files are too: mkstemp makes them 0600).
        await asyncio.to_thread(self.mail_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self._handler, hostname="video2mp3-sink", loop=loop),
            host=self.host,
            port=self._port,
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()


async def run_sink(mail_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve until cancelled: the entry the `up` supervisor runs when SMTP_URL is unset."""
    sink = MailSink(mail_dir, host, port)
    await sink.start()
    log.info("mail sink on %s keeps mail in %s", sink.url, mail_dir)
    try:
        await asyncio.Event().wait()
    finally:
        await sink.stop()
