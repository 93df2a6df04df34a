"""The mails auth sends itself: address verification and password reset.

Sent over SMTP from auth (the notification service's mailer, bounded by NETWORK_TIMEOUT), in the
background: a request never waits for the mail server, so a password-reset request takes as long
whether the account exists or not. Auth has no broker, and these mails matter only for minutes:
a mail the server refuses is retried with backoff for SMTP_RETRY_WINDOW; one lost to a restart
is asked for again (a new reset mail also proves the address).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
import uuid
from dataclasses import dataclass

from services.notification.mailer import MailDeliveryError, MailRejected, SmtpMailer, compose
from services.notification.templates import MailContent
from shared.settings import Settings

log = logging.getLogger(__name__)

VERIFY_TTL_SECONDS = 48 * 3600
RESET_TTL_SECONDS = 3600
QUEUE_SIZE = 1000
FIRST_RETRY_DELAY = 2.0
MAX_RETRY_DELAY = 60.0
SENDING_AT_ONCE = 8


def verification_mail(link: str) -> MailContent:
    hours = VERIFY_TTL_SECONDS // 3600
    text = (
        "Someone (we hope you) created a video2mp3 account with this address.\n\n"
        f"Confirm it, within {hours} hours, to receive mails about your conversions:\n{link}\n\n"
        "If it was not you, ignore this mail: nothing is sent here until the address is confirmed."
    )
    body = (
        "<p>Someone (we hope you) created a video2mp3 account with this address.</p>"
        f'<p><a href="{html.escape(link)}">Confirm this address</a> within {hours} hours to '
        "receive mails about your conversions.</p><p>If it was not you, ignore this mail.</p>"
    )
    return MailContent("Confirm your address for video2mp3", text, body)


def reset_mail(link: str) -> MailContent:
    text = (
        "Someone (we hope you) asked to set a new password for the video2mp3 account of this "
        f"address. Choose one within an hour:\n{link}\n\n"
        "If it was not you, ignore this mail: your password stays as it is."
    )
    body = (
        "<p>Someone (we hope you) asked to set a new password for the video2mp3 account of this "
        f'address.</p><p><a href="{html.escape(link)}">Choose a new password</a> within an '
        "hour.</p><p>If it was not you, ignore this mail: your password stays as it is.</p>"
    )
    return MailContent("Set a new password for video2mp3", text, body)


def page_link(public_url: str, action: str, token: str) -> str:
    # In the fragment: it never reaches a server, so no access log or proxy ever sees the token.
    return f"{public_url.rstrip('/')}/#{action}={token}"


@dataclass(frozen=True)
class _Outgoing:
    recipient: str
    content: MailContent
    key: str


class Postman:
    """A queue of mails and the one task that sends them, for as long as the app runs."""

    def __init__(self, settings: Settings) -> None:
        self._public_url = settings.public_url
        self._sender = settings.mail_from
        self._window = settings.smtp_retry_window
        self._mailer = (
            SmtpMailer(settings.smtp_url, settings.network_timeout) if settings.smtp_url else None
        )
        self._queue: asyncio.Queue[_Outgoing] = asyncio.Queue(QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._mailer is None:
            log.warning("SMTP_URL is not set: verification and reset mails are not sent")
        self._task = asyncio.create_task(self._run(), name="auth-postman")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def send_verification(self, recipient: str, token: str) -> None:
        self._post(recipient, verification_mail(page_link(self._public_url, "verify", token)))

    def send_reset(self, recipient: str, token: str) -> None:
        self._post(recipient, reset_mail(page_link(self._public_url, "reset", token)))

    def _post(self, recipient: str, content: MailContent) -> None:
        try:
            self._queue.put_nowait(_Outgoing(recipient, content, f"auth-{uuid.uuid4().hex}"))
        except asyncio.QueueFull:
            log.warning("mail queue full: a %r mail is dropped", content.subject)

    async def _run(self) -> None:
        # Several at once, so that one mail waiting out a refusal does not hold up the rest.
        sending = asyncio.Semaphore(SENDING_AT_ONCE)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                mail = await self._queue.get()
                await sending.acquire()
                task = asyncio.create_task(self._deliver_and_release(mail, sending))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()

    async def _deliver_and_release(self, mail: _Outgoing, sending: asyncio.Semaphore) -> None:
        try:
            await self._deliver(mail)
        except Exception:  # one bad mail must not stop the ones after it
            log.exception("mail %s not sent", mail.key)
        finally:
            sending.release()

    async def _deliver(self, mail: _Outgoing) -> None:
        if self._mailer is None:
            return
        message = compose(
            mail.content, sender=self._sender, recipient=mail.recipient, message_key=mail.key
        )
        started = time.monotonic()
        delay = FIRST_RETRY_DELAY
        while True:
            try:
                await self._mailer.send(message)
                log.info("mailed %s", mail.key)
                return
            except MailRejected as exc:
                log.warning("mail %s refused for good: %s", mail.key, exc)
                return
            except MailDeliveryError as exc:
                if time.monotonic() - started + delay > self._window:
                    log.error("mail %s abandoned: %s", mail.key, exc)
                    return
                log.warning("mail %s not sent (%s); retrying in %.0f s", mail.key, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
