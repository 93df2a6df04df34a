"""The words of every notification: subject, in-app title and body, plain-text and HTML mail.

Pure functions of their inputs, so the wording can be read and tested without a mail server.
"""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class MailContent:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class InAppContent:
    title: str
    body: str


def _one_line(value: str) -> str:
    """File names come from users: keep CR/LF and other control characters out of headers."""
    return "".join(ch if ch.isprintable() else " " for ch in value).strip()


def describe_duration(seconds: int) -> str:
    """`604800` -> `7 days`: how long a link works, in the largest whole unit."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"


def completed_in_app(filename: str, output_filename: str) -> InAppContent:
    return InAppContent(
        title=f"Your MP3 is ready: {_one_line(filename)}",
        body=f"{_one_line(output_filename)} is ready to download.",
    )


def failed_in_app(filename: str, detail: str) -> InAppContent:
    return InAppContent(
        title=f"Conversion failed: {_one_line(filename)}",
        body=detail,
    )


def _html_page(heading: str, paragraphs: list[str]) -> str:
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        f'<body style="font-family: sans-serif">\n<h2>{heading}</h2>\n{body}\n</body></html>\n'
    )


def completed_mail(
    filename: str, output_filename: str, link: str, link_ttl_seconds: int
) -> MailContent:
    name = _one_line(filename)
    output = _one_line(output_filename)
    validity = describe_duration(link_ttl_seconds)
    text = (
        f"Hello,\n\n"
        f"your file {name} has been converted to {output}.\n\n"
        f"Download it here (no login needed, the link works for {validity}):\n"
        f"{link}\n\n"
        f"-- video2mp3\n"
    )
    safe_link = html.escape(link, quote=True)
    page = _html_page(
        "Your MP3 is ready",
        [
            f"Your file <strong>{html.escape(name)}</strong> has been converted to "
            f"<strong>{html.escape(output)}</strong>.",
            f'<a href="{safe_link}">Download {html.escape(output)}</a>',
            f"No login needed; the link works for {validity}.",
        ],
    )
    return MailContent(subject=f"Your MP3 is ready: {name}", text=text, html=page)


def failed_mail(filename: str, detail: str) -> MailContent:
    name = _one_line(filename)
    text = f"Hello,\n\nwe could not convert your file {name}:\n\n    {detail}\n\n-- video2mp3\n"
    page = _html_page(
        "Conversion failed",
        [
            f"We could not convert your file <strong>{html.escape(name)}</strong>:",
            f"<em>{html.escape(detail)}</em>",
        ],
    )
    return MailContent(subject=f"Conversion failed: {name}", text=text, html=page)


def webhook_disabled_in_app(url: str, reason: str) -> InAppContent:
    return InAppContent(
        title=f"Webhook disabled: {_one_line(url)}",
        body=f"Deliveries kept failing ({_one_line(reason)}). Replay one to enable it again.",
    )


def webhook_disabled_mail(url: str, reason: str) -> MailContent:
    safe = _one_line(url)
    text = (
        f"Hello,\n\nyour webhook {safe} did not accept deliveries for too long "
        f"({_one_line(reason)}), so it is now disabled.\n"
        "Once it works again, replay one of its deliveries to enable it.\n"
    )
    return MailContent(
        subject="Your webhook was disabled",
        text=text,
        html=f"<p>Hello,</p><p>your webhook <code>{html.escape(safe)}</code> did not accept "
        f"deliveries for too long ({html.escape(_one_line(reason))}), so it is now disabled.</p>"
        "<p>Once it works again, replay one of its deliveries to enable it.</p>",
    )
