"""Sending mail over SMTP with aiosmtplib, bounded in time, failures sorted by whether to retry."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
from email_validator import EmailNotValidError, validate_email

from services.notification.templates import MailContent

_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class MailDeliveryError(Exception):
    """The mail was not accepted this time; trying again later may succeed."""


class MailRejected(MailDeliveryError):
    """The server refused the message for good (e.g. the recipient does not exist)."""


class MailSender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...

    @property
    def max_duration(self) -> float:
        """The longest one `send` may take, so a claim on a mail can outlive it."""
        ...


@dataclass(frozen=True)
class SmtpTarget:
    hostname: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        """`smtp://user:pass@host:port`, or `smtps://` for TLS from the first byte."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:port or smtps://...")
        implicit_tls = parts.scheme == "smtps"
        return cls(
            hostname=parts.hostname,
            port=parts.port or (465 if implicit_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=implicit_tls,
        )


def compose(content: MailContent, *, sender: str, recipient: str, message_key: str) -> EmailMessage:
    """A multipart/alternative message: plain text first, HTML as the richer alternative."""
    message = EmailMessage()
    message["Subject"] = content.subject
    message["From"] = sender
    message["To"] = _ascii_domain(recipient)
    # The same key on every retry gives the same Message-ID, so a receiving server or client
    # can recognise a mail that was accepted but whose acknowledgement got lost.
    message["Message-ID"] = f"<{_MSGID_UNSAFE.sub('-', message_key)}@video2mp3.local>"
    message.set_content(content.text)
    message.add_alternative(content.html, subtype="html")
    return message


def _ascii_domain(address: str) -> str:
    """`address` with its domain in IDNA form (bob@bücher.ch -> bob@xn--bcher-kva.ch), which
    every SMTP server takes; auth stores the Unicode form. A non-ASCII local part cannot be
    written in ASCII and is left to servers that speak SMTPUTF8."""
    try:
        parts = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return address
    return parts.ascii_email or address


class SmtpMailer:
    """Sends each message on its own connection: mail is rare, a pool is not worth its upkeep."""

    def __init__(self, smtp_url: str, timeout: float) -> None:
        self._target = SmtpTarget.parse(smtp_url)
        self._timeout = timeout
        # The name we greet with (EHLO). aiosmtplib looks it up (getfqdn, in a thread) on every
        # connection unless given one: once per process is enough.
        self._local_hostname: str | None = None

    @property
    def max_duration(self) -> float:
        # Connect, greeting, optional STARTTLS and AUTH, envelope, data: each call is bounded
        # by `timeout`, and the whole exchange by a few of them.
        return self._timeout * 4

    async def send(self, message: EmailMessage) -> None:
        target = self._target
        try:
            async with asyncio.timeout(self.max_duration):
                if self._local_hostname is None:
                    self._local_hostname = await asyncio.to_thread(socket.getfqdn)
                await aiosmtplib.send(
                    message,
                    hostname=target.hostname,
                    port=target.port,
                    username=target.username,
                    password=target.password,
                    use_tls=target.implicit_tls,
                    timeout=self._timeout,
                    local_hostname=self._local_hostname,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            permanent = all(refusal.code >= 500 for refusal in exc.recipients)
            error = MailRejected if permanent else MailDeliveryError
            raise error(f"recipient refused: {exc}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise MailDeliveryError(
                f"SMTP server {target.hostname}:{target.port} failed: {reason}"
            ) from exc
