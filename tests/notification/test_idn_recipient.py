"""Mail to an address with an internationalised domain, through an SMTP server without SMTPUTF8."""

from __future__ import annotations

from typing import Any

from aiosmtpd.controller import Controller

from services.notification.mailer import SmtpMailer, compose
from services.notification.templates import completed_mail
from tests.support.net import free_port


class Recipients:
    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.seen.append(list(envelope.rcpt_tos))
        return "250 OK"


async def test_an_idn_domain_is_sent_in_its_ascii_form() -> None:
    # Auth stores bob@bücher.ch (email-validator's Unicode form); a server that does not speak
    # SMTPUTF8 refused it, and the mail was retried for 15 minutes and then dropped.
    handler = Recipients()
    port = free_port()
    server = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    server.start()
    try:
        message = compose(
            completed_mail("a.mp4", "a.mp3", "http://h/v1/downloads/t", 60),
            sender="video2mp3 <no-reply@video2mp3.local>",
            recipient="bob@b\u00fccher.ch",
            message_key="job:job.completed",
        )
        await SmtpMailer(f"smtp://127.0.0.1:{port}", 5).send(message)
    finally:
        server.stop()
    assert handler.seen == [["bob@xn--bcher-kva.ch"]]
