"""`POST /v1/jobs` with `{"source_url": …}`: record the job and ask a worker to fetch it.

The request handler only checks the URL (scheme, and the addresses its host resolves to) and the
options, and admits the job under the account's quotas; the bytes are fetched by a converter's
importer (`services/converter/importer.py`), never here.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi import Request

from services.gateway.quota import admit_job
from services.gateway.service import clean_filename
from services.gateway.state import GatewayState
from shared.errors import Unprocessable
from shared.events import JobImportRequested, JobImportRequestedPayload
from shared.jobs import Job, SourceInfo
from shared.options import ConversionOptions
from shared.outbound import parse_allow_nets, resolve
from shared.tokens import Claims

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2000
MAX_BODY_BYTES = 64 * 1024


async def read_import_body(request: Request) -> dict[str, Any]:
    """The JSON body of an import, bounded; 422 for anything but an object."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Unprocessable("the JSON body is too large")
    try:
        parsed = json.loads(body or b"null")
    except ValueError:
        raise Unprocessable("the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise Unprocessable('send a JSON object: {"source_url": "https://…", …options}')
    return parsed


def filename_from_url(url: str) -> str:
    return clean_filename(unquote(PurePosixPath(urlsplit(url).path).name))


def _option_fields(body: dict[str, Any]) -> dict[str, str]:
    """The options beside `source_url`, as the form strings the options parser reads."""
    fields: dict[str, str] = {}
    for key, value in body.items():
        if key == "source_url" or value is None:
            continue
        if isinstance(value, bool):
            fields[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            fields[key] = str(value)
        else:
            fields[key] = json.dumps(value)
    return fields


async def submit_import(
    state: GatewayState, user: Claims, body: dict[str, Any], correlation_id: str
) -> Job:
    url = body.get("source_url")
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise Unprocessable(f"source_url must be an http(s) URL of at most {MAX_URL_LENGTH} chars")
    options = ConversionOptions.from_form(_option_fields(body)).normalized()
    settings = state.settings
    # Refused now with url_forbidden when plainly internal; the importer checks every hop again.
    await resolve(
        url, parse_allow_nets(settings.outbound_allow_nets), timeout=settings.network_timeout
    )
    async with admit_job(state, user.user_id, None):
        job = Job(
            id=uuid.uuid4().hex,
            user_id=user.user_id,
            user_email=user.email,
            user_email_verified=user.email_verified,
            filename=filename_from_url(url),
            options=options,
            source=SourceInfo(size=0),
            correlation_id=correlation_id,
        )
        await state.jobs.insert(job)
        try:
            await state.publisher.publish(
                JobImportRequested(
                    correlation_id=correlation_id,
                    payload=JobImportRequestedPayload(
                        job_id=job.id,
                        user_id=user.user_id,
                        user_email=user.email,
                        filename=job.filename,
                        source_url=url,
                        options=options,
                    ),
                )
            )
        except BaseException:
            await state.jobs.delete(job.id)
            raise
    log.info("job %s: import requested", job.id)
    return job
