"""A delivery cancelled while its mail is being sent (the broker closing our connection cancels
its handlers): the mail the server accepts is recorded sent, and a redelivery sends nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.notification.schemas import MailStatus, notification_id
from shared.events import EventType
from shared.settings import Settings
from tests.notification.conftest import ServiceRunner
from tests.notification.test_mail_flow import completed
from tests.support.net import free_port


class HeldData:
    """An SMTP server that holds each message's DATA until released, then accepts it."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.accepted: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.arrived.set()
        await asyncio.to_thread(self.release.wait, 30)
        self.accepted.append(envelope.original_content or b"")
        return "250 OK"


async def test_a_delivery_cancelled_mid_send_records_the_mail_and_sends_it_once(
    settings_factory: Callable[..., Settings], run_service: ServiceRunner
) -> None:
    server = HeldData()
    port = free_port()
    controller = Controller(server, hostname="127.0.0.1", port=port)
    await asyncio.to_thread(controller.start)
    try:
        settings = settings_factory(smtp_url=f"smtp://127.0.0.1:{port}")
        event = completed()
        note_id = notification_id(event.payload.job_id, EventType.JOB_COMPLETED)
        async with run_service(settings) as svc:
            delivery = asyncio.create_task(svc.state.service.handle(event))
            assert await asyncio.to_thread(server.arrived.wait, 20), "no mail reached DATA"
            delivery.cancel()
            with pytest.raises(asyncio.CancelledError):
                await delivery
            server.release.set()

            deadline = time.monotonic() + 20
            while (note := await svc.state.store.get(note_id)) is None or (
                note.mail_status is not MailStatus.SENT
            ):
                assert time.monotonic() < deadline, f"the accepted mail stayed {note}"
                await asyncio.sleep(0.05)

            # The redelivery of the cancelled event finds the mail sent.
            await asyncio.wait_for(svc.state.service.handle(event), 10)
        assert len(server.accepted) == 1
        assert note.mail_attempts == 1
    finally:
        server.release.set()
        await asyncio.to_thread(controller.stop)
