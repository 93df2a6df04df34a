"""A real SMTP server for tests: aiosmtpd on a free port, keeping every mail it receives."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from types import TracebackType

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.net import free_port

_DOWNLOAD_LINK = re.compile(r"https?://[^\s<>\"']+/v1/downloads/([A-Za-z0-9._~-]+)")


class _Collector:
    """Keeps each mail's bytes and parses them when they are read: the benchmarks run this
    catcher in their own process, beside the stack they measure, and most mails there are
    never looked at."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.parsed: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.received.append(envelope.original_content or b"")
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        with self.lock:
            for raw in self.received[len(self.parsed) :]:
                message = BytesParser(policy=policy.default).parsebytes(raw)
                assert isinstance(message, EmailMessage)
                self.parsed.append(message)
            return list(self.parsed)


class SmtpCatcher:
    """aiosmtpd's threaded Controller on 127.0.0.1; pass `port` to reserve it before starting.

    `start()`/`stop()` block briefly (the server runs in its own thread); from async code use
    `async with SmtpCatcher() as smtp:` or `await asyncio.to_thread(catcher.start)`.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self._collector = _Collector()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    @property
    def messages(self) -> list[EmailMessage]:
        return self._collector.messages()

    def start(self) -> None:
        controller = Controller(self._collector, hostname=self.host, port=self.port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    async def __aenter__(self) -> SmtpCatcher:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    async def wait_for(self, count: int, timeout: float = 20) -> list[EmailMessage]:
        """Wait until at least `count` mails arrived; returns all of them."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.messages
            if len(received) >= count:
                return received
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} mail(s) in {timeout}s, got {len(received)}")
            await asyncio.sleep(0.05)

    async def expect_exactly(self, count: int, settle: float = 2.0) -> list[EmailMessage]:
        """Wait for `count` mails, then a while longer to be sure no more arrive."""
        await self.wait_for(count)
        await asyncio.sleep(settle)
        received = self.messages
        assert len(received) == count, f"expected exactly {count} mail(s), got {len(received)}"
        return received


def text_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert isinstance(part, EmailMessage), "no text/plain part"
    content: str = part.get_content()
    return content


def html_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert isinstance(part, EmailMessage), "no text/html part"
    content: str = part.get_content()
    return content


def download_link(message: EmailMessage) -> str:
    """The emailed `/v1/downloads/<token>` URL, from the plain-text part."""
    match = _DOWNLOAD_LINK.search(text_body(message))
    assert match is not None, "no download link in the mail"
    return match.group(0)


def download_token(message: EmailMessage) -> str:
    return download_link(message).rsplit("/", 1)[1]
