"""The job document stored in MongoDB, its status enum and the view clients receive."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.errors import ErrorCode

JOBS_COLLECTION = "jobs"


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})


class AudioTrack(BaseModel):
    index: int
    codec: str | None = None
    channels: int | None = None
    sample_rate: int | None = None
    language: str | None = None
    title: str | None = None


class SourceInfo(BaseModel):
    size: int
    duration: float | None = None
    container: str | None = None
    audio_codec: str | None = None
    video_codec: str | None = None
    channels: int | None = None
    sample_rate: int | None = None
    bitrate: int | None = None
    audio_tracks: list[AudioTrack] = Field(default_factory=list)


class Loudness(BaseModel):
    """EBU R128 readings of the output itself, taken after it was written."""

    integrated_lufs: float
    true_peak_dbtp: float


class OutputInfo(BaseModel):
    size: int
    duration: float | None = None
    bitrate: int | None = None
    codec: str = "mp3"
    channels: int | None = None
    sample_rate: int | None = None
    filename: str
    content_type: str = "audio/mpeg"
    # "copy" when the source's MP3 stream was kept as it was, "encode" otherwise.
    path: Literal["copy", "encode"] | None = None
    track: int | None = None
    cover: bool = False
    # Measured on the output when it was normalised; None with `loudness_note` saying why when
    # it could not be (a clip under 3 s, silence).
    loudness: Loudness | None = None
    loudness_note: str | None = None


class JobError(BaseModel):
    code: ErrorCode
    detail: str


def utcnow() -> datetime:
    return datetime.now(UTC)


class Job(BaseModel):
    """One conversion, as kept in MongoDB (`_id` is `id`)."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    user_id: str
    user_email: str
    # Job mails go only to proven addresses (from the access token's `email_verified`); every
    # new job sets it, and a job stored before the field existed keeps getting its mail.
    user_email_verified: bool = True
    status: JobStatus = JobStatus.QUEUED
    progress: int = 0
    filename: str
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    correlation_id: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    source_blob_id: str | None = None
    output_blob_id: str | None = None
    source: SourceInfo
    output: OutputInfo | None = None
    error: JobError | None = None
    attempts: int = 0
    # When the output (and its download links) expires; set on completion.
    expires_at: datetime | None = None
    output_expired: bool = False
    # The final event (completed/failed) recorded with the state change that caused it, until it
    # is published: a crash between the two cannot lose it (a transactional outbox).
    outbox: dict[str, Any] | None = None
    # When the requeue sweep last published the job's `job.submitted` again (None: only the
    # gateway's publish at `created_at`).
    published_at: datetime | None = None
    # The `event_id` of the message whose delivery holds the job: only a redelivery of that same
    # message may take a `processing` job over (its converter died), never a republished copy.
    claimed_by: str | None = None

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="python")

    @field_validator("created_at", "updated_at", "expires_at", "published_at")
    @classmethod
    def _assume_utc(cls, value: datetime | None) -> datetime | None:
        # Stored times are UTC; some servers and clients hand them back without a zone.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Job:
        return cls.model_validate(doc)

    @property
    def downloadable(self) -> bool:
        return (
            self.output is not None
            and self.status is JobStatus.COMPLETED
            and not self.output_expired
        )

    def public_view(self, stream_url: str | None = None) -> dict[str, Any]:
        """The job as the contract shows it: no storage ids, a download URL when done, and (when
        given) a short-lived signed URL that players and plain links can use without a token."""
        output: dict[str, Any] | None = None
        if self.output is not None and self.downloadable:
            output = {
                **self.output.model_dump(mode="json"),
                "download_url": f"/v1/jobs/{self.id}/download",
            }
            if stream_url:
                output["stream_url"] = stream_url
        return {
            "id": self.id,
            "status": str(self.status),
            "progress": self.progress,
            "filename": self.filename,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "options": self.options,
            "source": self.source.model_dump(mode="json"),
            "output": output,
            "error": self.error.model_dump(mode="json") if self.error else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }
