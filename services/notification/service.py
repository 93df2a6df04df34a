"""What the notification service does with an event: store a notification, mail it once.

No AMQP and no HTTP here: the worker hands in typed events, the routes ask for lists.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from services.notification import templates
from services.notification.mailer import MailDeliveryError, MailRejected, MailSender, compose
from services.notification.schemas import MailStatus, Notification, notification_id
from services.notification.store import Claim, NotificationStore
from shared.aio import shielded
from shared.events import Event, JobCompleted, JobFailed
from shared.links import download_url, sign_download_token
from shared.metrics import EMAILS
from shared.notices import NoticeType
from shared.settings import Settings

log = logging.getLogger(__name__)

# How often a duplicate delivery looks again while another one holds the mail's claim.
CLAIM_POLL_INTERVAL = 0.25
# Headroom over the mailer's own limit, for the MongoDB writes around a send.
CLAIM_MARGIN = timedelta(seconds=15)


class RetryLater(Exception):
    """The event could not be handled now; deliver it again later.

    `attempts` counts the tries so far, so a caller can space the retries out.
    """

    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(reason)
        self.attempts = attempts


@dataclass(frozen=True)
class LinkConfig:
    public_url: str
    key: bytes
    ttl: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkConfig:
        return cls(settings.public_url, settings.link_key, settings.download_link_ttl)

    def url_for(self, job_id: str) -> str:
        return download_url(self.public_url, sign_download_token(self.key, job_id, self.ttl))


def _utcnow() -> datetime:
    return datetime.now(UTC)


class NotificationService:
    def __init__(
        self,
        store: NotificationStore,
        mailer: MailSender,
        links: LinkConfig,
        mail_from: str,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._mailer = mailer
        self._links = links
        self._mail_from = mail_from
        self._clock = clock
        self._claim_for = timedelta(seconds=mailer.max_duration) + CLAIM_MARGIN

    async def handle(self, event: Event) -> None:
        """Notify the job's owner of its outcome; raises RetryLater if the mail must wait."""
        if not isinstance(event, JobCompleted | JobFailed):
            log.debug("ignoring %s %s", event.type, event.event_id)
            return
        owner = uuid.uuid4().hex
        note, claimed = await self._store.add(
            self._notification_for(event), owner, self._clock(), self._claim_for
        )
        await self._mail_once(note, event, owner, claimed=claimed)

    async def give_up(self, event: Event, reason: str) -> None:
        """Stop retrying the mail of `event`: the in-app notification stays, the mail is failed."""
        if isinstance(event, JobCompleted | JobFailed):
            note_id = notification_id(event.payload.job_id, event.type)
            log.error("mail for %s abandoned after retries: %s", note_id, reason)
            await self._store.give_up_mail(note_id, self._clock(), reason)
            EMAILS.labels("failed").inc()

    async def mark_read(self, user_id: str, note_ids: list[str] | None) -> None:
        await self._store.mark_read(user_id, note_ids)

    async def list_for_user(self, user_id: str) -> list[Notification]:
        return await self._store.list_for_user(user_id)

    async def notify_webhook_disabled(
        self, endpoint_id: str, user_id: str, user_email: str | None, url: str, reason: str
    ) -> None:
        """Tell an owner in the app, and by mail at a proven address, that their webhook was
        disabled."""
        now = self._clock()
        content = templates.webhook_disabled_in_app(url, reason)
        note = Notification(
            id=f"{endpoint_id}:{NoticeType.WEBHOOK_DISABLED}:{int(now.timestamp())}",
            user_id=user_id,
            user_email=user_email or "",
            job_id=None,
            type=NoticeType.WEBHOOK_DISABLED,
            title=content.title,
            body=content.body,
            created_at=now,
            event_id=endpoint_id,
        )
        owner = uuid.uuid4().hex
        stored, claimed = await self._store.add(note, owner, now, self._claim_for)
        if not claimed:
            return
        if user_email is None:
            await self._store.finish_mail(stored.id, owner, MailStatus.UNVERIFIED, now, None)
            return
        message = compose(
            templates.webhook_disabled_mail(url, reason),
            sender=self._mail_from,
            recipient=user_email,
            message_key=stored.id,
        )
        try:
            await self._send_and_record(stored, message, owner)
        except RetryLater as exc:
            # The in-app notice stands; the disabling is not undone for a mail outage.
            log.warning("%s", exc)

    def _notification_for(self, event: JobCompleted | JobFailed) -> Notification:
        payload = event.payload
        link: str | None = None
        if isinstance(event, JobCompleted):
            link = self._links.url_for(payload.job_id)
            content = templates.completed_in_app(
                event.payload.filename, event.payload.output_filename
            )
        else:
            content = templates.failed_in_app(event.payload.filename, event.payload.detail)
        return Notification(
            id=notification_id(payload.job_id, event.type),
            user_id=payload.user_id,
            user_email=payload.user_email,
            job_id=payload.job_id,
            type=event.type,
            title=content.title,
            body=content.body,
            link=link,
            created_at=event.occurred_at,
            event_id=event.event_id,
        )

    def _mail_for(
        self, note: Notification, event: JobCompleted | JobFailed
    ) -> templates.MailContent:
        # The link comes from the stored notification, so a retried mail carries the same link
        # as the one the user sees in the app.
        if isinstance(event, JobCompleted):
            assert note.link is not None
            return templates.completed_mail(
                event.payload.filename, event.payload.output_filename, note.link, self._links.ttl
            )
        return templates.failed_mail(event.payload.filename, event.payload.detail)

    async def _mail_once(
        self, note: Notification, event: JobCompleted | JobFailed, owner: str, *, claimed: bool
    ) -> None:
        """Send the mail once: `claimed` when `owner` holds its claim already (a new
        notification is stored claimed), else a claim is taken first."""
        if not claimed and not await self._claim(note.id, owner):
            return
        if not event.payload.user_email_verified:
            # Anyone may register any address: only its proven owner gets our mail.
            await self._store.finish_mail(
                note.id, owner, MailStatus.UNVERIFIED, self._clock(), None
            )
            return
        message = compose(
            self._mail_for(note, event),
            sender=self._mail_from,
            recipient=note.user_email,
            message_key=note.id,
        )
        # A delivery cancelled mid-send (the broker closing our connection cancels its handlers)
        # left a mail the server had accepted unrecorded: the redelivery sent it again once the
        # claim ran out. The send and its record now finish whatever happens to the delivery.
        await shielded(self._send_and_record(note, message, owner), f"the mail of {note.id}")

    async def _send_and_record(self, note: Notification, message: EmailMessage, owner: str) -> None:
        try:
            await self._mailer.send(message)
        except MailRejected as exc:
            log.warning("mail for %s refused for good: %s", note.id, exc)
            EMAILS.labels("failed").inc()
            await self._store.finish_mail(
                note.id, owner, MailStatus.REJECTED, self._clock(), str(exc)
            )
            return
        except MailDeliveryError as exc:
            await self._store.release_mail(note.id, owner, str(exc))
            stored = await self._store.get(note.id)
            attempts = stored.mail_attempts if stored is not None else 1
            raise RetryLater(f"mail for {note.id} not sent: {exc}", attempts) from exc
        await self._store.finish_mail(note.id, owner, MailStatus.SENT, self._clock(), None)
        EMAILS.labels("sent").inc()
        log.info("mailed %s to its owner", note.id)

    async def _claim(self, note_id: str, owner: str) -> bool:
        """True once this call may send; False when the mail is already dealt with.

        A claim held by another delivery is waited out rather than given up: if that delivery
        fails, its message is requeued, but if its process died, only this one is left to send.
        """
        deadline = time.monotonic() + self._claim_for.total_seconds() + CLAIM_POLL_INTERVAL
        while True:
            claim = await self._store.claim_mail(note_id, owner, self._clock(), self._claim_for)
            if claim is Claim.CLAIMED:
                return True
            if claim is Claim.DONE:
                return False
            if time.monotonic() > deadline:
                raise RetryLater(f"mail for {note_id} is still claimed by another sender", 0)
            await asyncio.sleep(CLAIM_POLL_INTERVAL)
