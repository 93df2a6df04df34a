"""End to end through real RabbitMQ, the MongoDB-wire server and a real SMTP server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from services.notification.schemas import MailStatus, Notification, notification_id
from shared.errors import ErrorCode
from shared.events import (
    EventType,
    JobCompleted,
    JobCompletedPayload,
    JobFailed,
    JobFailedPayload,
)
from shared.links import verify_download_token
from shared.settings import Settings
from tests.notification.conftest import Publish, RunningService, ServiceRunner, TokenIssuer
from tests.support.smtp import SmtpCatcher, download_token, html_body, text_body


def completed(
    user_id: str = "u1",
    filename: str = "holiday.mp4",
    job_id: str | None = None,
    occurred_at: datetime | None = None,
) -> JobCompleted:
    return JobCompleted(
        payload=JobCompletedPayload(
            job_id=job_id or uuid.uuid4().hex,
            user_id=user_id,
            user_email=f"{user_id}@example.com",
            filename=filename,
            output_filename=filename.rsplit(".", 1)[0] + ".mp3",
            size=123_456,
            duration=12.5,
            bitrate=192_000,
        ),
        **({"occurred_at": occurred_at} if occurred_at else {}),
    )


def failed(user_id: str = "u1", detail: str = "the file has no audio track") -> JobFailed:
    return JobFailed(
        payload=JobFailedPayload(
            job_id=uuid.uuid4().hex,
            user_id=user_id,
            user_email=f"{user_id}@example.com",
            filename="silent.mp4",
            code=ErrorCode.NO_AUDIO_STREAM,
            detail=detail,
        )
    )


async def stored(svc: RunningService, note_id: str) -> Notification:
    note = await svc.state.store.get(note_id)
    assert note is not None
    return note


async def test_completed_job_mails_a_working_download_link(
    settings_factory: Callable[..., Settings],
    smtp: SmtpCatcher,
    run_service: ServiceRunner,
    publish: Publish,
) -> None:
    settings = settings_factory(smtp_url=smtp.url, public_url="https://mp3.example.org")
    event = completed(filename="my <clip> & co.mp4")
    async with run_service(settings) as svc:
        await publish(event)
        [mail] = await smtp.wait_for(1)
        note = await stored(svc, notification_id(event.payload.job_id, EventType.JOB_COMPLETED))

    assert mail["To"] == "u1@example.com"
    assert mail["Subject"] == "Your MP3 is ready: my <clip> & co.mp4"
    assert mail.get_content_type() == "multipart/alternative"
    token = download_token(mail)
    assert verify_download_token(settings.link_key, token) == event.payload.job_id
    assert f"https://mp3.example.org/v1/downloads/{token}" in text_body(mail)
    html = html_body(mail)
    assert "my &lt;clip&gt; &amp; co.mp4" in html
    assert "<clip>" not in html
    assert f'href="https://mp3.example.org/v1/downloads/{token}"' in html

    assert note.mail_status is MailStatus.SENT
    assert note.link == f"https://mp3.example.org/v1/downloads/{token}"
    assert note.read is False
    assert note.user_id == "u1"


async def test_a_duplicate_event_sends_one_mail(
    settings_factory: Callable[..., Settings],
    smtp: SmtpCatcher,
    run_service: ServiceRunner,
    publish: Publish,
) -> None:
    settings = settings_factory(smtp_url=smtp.url)
    event = completed()
    # Same job and outcome, but another event id: a converter that published twice.
    replay = event.model_copy(update={"event_id": uuid.uuid4().hex})
    async with run_service(settings) as svc:
        await publish(event)
        await publish(event)
        await smtp.expect_exactly(1)
        await publish(replay)
        await smtp.expect_exactly(1)
        note = await stored(svc, notification_id(event.payload.job_id, EventType.JOB_COMPLETED))
    assert note.mail_status is MailStatus.SENT
    assert note.mail_attempts == 1


async def test_failed_job_mails_the_reason(
    settings_factory: Callable[..., Settings],
    smtp: SmtpCatcher,
    run_service: ServiceRunner,
    publish: Publish,
) -> None:
    settings = settings_factory(smtp_url=smtp.url)
    event = failed(detail="the file has no audio track")
    async with run_service(settings) as svc:
        await publish(event)
        [mail] = await smtp.wait_for(1)
        note = await stored(svc, notification_id(event.payload.job_id, EventType.JOB_FAILED))
    assert mail["Subject"] == "Conversion failed: silent.mp4"
    assert "the file has no audio track" in text_body(mail)
    assert "the file has no audio track" in html_body(mail)
    assert note.body == "the file has no audio track"
    assert note.link is None


async def test_mail_waits_for_the_smtp_server_and_is_sent_once(
    settings_factory: Callable[..., Settings],
    run_service: ServiceRunner,
    publish: Publish,
) -> None:
    smtp = SmtpCatcher()  # its port is reserved, nothing listens yet
    settings = settings_factory(smtp_url=smtp.url)
    event = completed()
    note_id = notification_id(event.payload.job_id, EventType.JOB_COMPLETED)
    async with run_service(settings, requeue_delay=0.5) as svc:
        await publish(event)
        deadline = time.monotonic() + 20
        while (note := await svc.state.store.get(note_id)) is None or note.mail_error is None:
            assert time.monotonic() < deadline, "the first attempt never failed"
            await asyncio.sleep(0.05)
        assert note.mail_status is MailStatus.PENDING
        async with smtp:
            [mail] = await smtp.expect_exactly(1)
            note = await stored(svc, note_id)
    assert verify_download_token(settings.link_key, download_token(mail)) == event.payload.job_id
    assert note.mail_status is MailStatus.SENT
    assert note.mail_attempts >= 2


async def test_list_shows_only_the_callers_notifications_newest_first(
    settings_factory: Callable[..., Settings],
    smtp: SmtpCatcher,
    run_service: ServiceRunner,
    publish: Publish,
    token_issuer: TokenIssuer,
) -> None:
    settings = settings_factory(smtp_url=smtp.url, auth_urls=token_issuer.url)
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    older = completed("alice", "old.mp4", occurred_at=earlier)
    newer = failed("alice")
    other = completed("bob", "bobs.mp4")
    async with run_service(settings) as svc:
        for event in (older, newer, other):
            await publish(event)
        await smtp.wait_for(3)

        alice = await svc.client.get("/v1/notifications", headers=token_issuer.headers("alice"))
        bob = await svc.client.get("/v1/notifications", headers=token_issuer.headers("bob"))
        anonymous = await svc.client.get("/v1/notifications")
        forged = await svc.client.get(
            "/v1/notifications", headers={"Authorization": "Bearer not.a.token"}
        )

    assert alice.status_code == 200, alice.text
    items = alice.json()["items"]
    assert [i["job_id"] for i in items] == [newer.payload.job_id, older.payload.job_id]
    assert [i["type"] for i in items] == ["job.failed", "job.completed"]
    assert set(items[0]) == {"id", "job_id", "type", "title", "body", "link", "read", "created_at"}
    assert items[0]["link"] is None
    assert items[1]["link"].startswith(f"{settings.public_url}/v1/downloads/")
    assert items[1]["title"] == "Your MP3 is ready: old.mp4"
    assert items[1]["read"] is False

    assert [i["job_id"] for i in bob.json()["items"]] == [other.payload.job_id]

    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"
    assert forged.status_code == 401
    assert forged.json()["code"] == "invalid_token"


async def test_health_and_readiness(
    settings_factory: Callable[..., Settings], smtp: SmtpCatcher, run_service: ServiceRunner
) -> None:
    async with run_service(settings_factory(smtp_url=smtp.url)) as svc:
        health = await svc.client.get("/healthz")
        ready = await svc.client.get("/readyz")
    assert health.status_code == 200
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"mongo": "ok", "amqp": "ok"}
