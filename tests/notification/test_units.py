"""Pure pieces: wording, escaping, SMTP URL parsing."""

from __future__ import annotations

import pytest

from services.notification import templates
from services.notification.mailer import SmtpTarget, compose


def test_smtp_urls() -> None:
    plain = SmtpTarget.parse("smtp://user%40x:p%3Ass@mail.example.org:2525")
    assert plain == SmtpTarget("mail.example.org", 2525, "user@x", "p:ss", implicit_tls=False)
    tls = SmtpTarget.parse("smtps://mail.example.org")
    assert (tls.port, tls.implicit_tls, tls.username) == (465, True, None)
    with pytest.raises(ValueError, match="SMTP_URL"):
        SmtpTarget.parse("http://mail.example.org")


def test_link_lifetime_reads_naturally() -> None:
    assert templates.describe_duration(7 * 86400) == "7 days"
    assert templates.describe_duration(3600) == "1 hour"
    assert templates.describe_duration(90) == "90 seconds"


def test_user_file_names_cannot_break_headers_or_html() -> None:
    content = templates.completed_mail(
        'evil\r\nBcc: x@y.z<script>".mp4', "evil.mp3", "http://h/v1/downloads/t?a=1&b=2", 60
    )
    message = compose(content, sender="a@b.c", recipient="d@e.f", message_key="job:job.completed")
    assert message["Bcc"] is None
    assert "\n" not in message["Subject"]
    assert "<script>" not in content.html
    assert 'href="http://h/v1/downloads/t?a=1&amp;b=2"' in content.html
    assert message["Message-ID"] == "<job-job.completed@video2mp3.local>"
