"""The event contract: one envelope, one typed model per event type, parsed by one adapter.

The dotted type names double as routing keys on the topic exchange.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Discriminator, Field, TypeAdapter

from shared.errors import ErrorCode

if TYPE_CHECKING:
    from shared.jobs import Job


class EventType(StrEnum):
    JOB_SUBMITTED = "job.submitted"
    JOB_STARTED = "job.started"
    JOB_PROGRESS = "job.progress"
    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_CANCEL_REQUESTED = "job.cancel_requested"
    JOB_CANCELLED = "job.cancelled"
    # A job whose source is a URL: a worker fetches it, then publishes job.submitted.
    JOB_IMPORT_REQUESTED = "job.import_requested"


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class JobRef(BaseModel):
    """What every job event carries: which job, and whose."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    user_id: str

    @classmethod
    def from_job(cls, job: Job, **fields: Any) -> Self:
        """This payload for `job`: the job's identity (id, owner, address and whether it is
        proven, file name: as far as the payload carries them) from its document, everything
        else from `fields`."""
        identity = {
            "job_id": job.id,
            "user_id": job.user_id,
            "user_email": job.user_email,
            "user_email_verified": job.user_email_verified,
            "filename": job.filename,
        }
        return cls(**{k: v for k, v in identity.items() if k in cls.model_fields}, **fields)


class JobSubmittedPayload(JobRef):
    user_email: str
    filename: str
    source_blob_id: str
    size: int
    options: dict[str, Any] = Field(default_factory=dict)


class JobProgressPayload(JobRef):
    progress: int = Field(ge=0, le=100)
    # "fetch" while a URL import downloads (progress of its bytes), else the conversion.
    stage: Literal["fetch"] | None = None


class JobImportRequestedPayload(JobRef):
    user_email: str
    filename: str
    source_url: str
    options: dict[str, Any] = Field(default_factory=dict)


class JobCompletedPayload(JobRef):
    user_email: str
    user_email_verified: bool = True
    filename: str
    output_filename: str
    size: int
    duration: float | None = None
    bitrate: int | None = None


class JobFailedPayload(JobRef):
    user_email: str
    user_email_verified: bool = True
    filename: str
    code: ErrorCode
    detail: str


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str = Field(default_factory=_new_id)
    version: int = 1
    occurred_at: datetime = Field(default_factory=_now)
    correlation_id: str = Field(default_factory=_new_id)
    # W3C trace context (traceparent, tracestate) of the span that published the event.
    trace: dict[str, str] = Field(default_factory=dict)


class JobSubmitted(Envelope):
    type: Literal[EventType.JOB_SUBMITTED] = EventType.JOB_SUBMITTED
    payload: JobSubmittedPayload


class JobStarted(Envelope):
    type: Literal[EventType.JOB_STARTED] = EventType.JOB_STARTED
    payload: JobRef


class JobProgress(Envelope):
    type: Literal[EventType.JOB_PROGRESS] = EventType.JOB_PROGRESS
    payload: JobProgressPayload


class JobCompleted(Envelope):
    type: Literal[EventType.JOB_COMPLETED] = EventType.JOB_COMPLETED
    payload: JobCompletedPayload


class JobFailed(Envelope):
    type: Literal[EventType.JOB_FAILED] = EventType.JOB_FAILED
    payload: JobFailedPayload


class JobCancelRequested(Envelope):
    type: Literal[EventType.JOB_CANCEL_REQUESTED] = EventType.JOB_CANCEL_REQUESTED
    payload: JobRef


class JobImportRequested(Envelope):
    type: Literal[EventType.JOB_IMPORT_REQUESTED] = EventType.JOB_IMPORT_REQUESTED
    payload: JobImportRequestedPayload


class JobCancelled(Envelope):
    type: Literal[EventType.JOB_CANCELLED] = EventType.JOB_CANCELLED
    payload: JobRef


AnyEvent = (
    JobSubmitted
    | JobStarted
    | JobProgress
    | JobCompleted
    | JobFailed
    | JobCancelRequested
    | JobCancelled
    | JobImportRequested
)
Event = Annotated[AnyEvent, Discriminator("type")]

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)

ALL_EVENTS: tuple[type[AnyEvent], ...] = (
    JobSubmitted,
    JobStarted,
    JobProgress,
    JobCompleted,
    JobFailed,
    JobCancelRequested,
    JobCancelled,
    JobImportRequested,
)
"""Every event model, for a handler that takes them all (the dead letters')."""


def parse_event(body: bytes | str) -> Event:
    """Parse and validate one message body; raises pydantic.ValidationError on anything else."""
    return event_adapter.validate_json(body)


def encode_event(event: Event) -> bytes:
    return event.model_dump_json().encode()


def client_view(event: Event) -> dict[str, Any]:
    """The `{type, job_id, ...}` shape that WebSocket clients receive."""
    payload = event.payload.model_dump(mode="json", exclude={"user_id", "user_email"})
    return {"type": str(event.type), "occurred_at": event.occurred_at.isoformat(), **payload}


class ClientEvent(BaseModel):
    """A live message as a client reads it (what `client_view` sends). Fields only some types
    carry are optional and others are ignored, so a client keeps reading a newer server."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: EventType
    job_id: str
    progress: int | None = None
    # An ErrorCode read as text: a code newer than the client leaves the message readable.
    code: str | None = None
    detail: str | None = None
