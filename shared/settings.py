"""Every configuration name of the contract, loaded once from the environment.

Each service reads only the fields it needs; none defines settings of its own.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1024**3


def _cpu_count() -> int:
    return os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Prefix of every exchange and queue name, so that several installs (or test runs) can share
    # one broker without seeing each other's messages. `up` makes one per VAR_DIR when unset.
    amqp_prefix: str = "video2mp3"
    mongo_url: str | None = None
    mongo_db: str = "video2mp3"
    database_url: str | None = None
    smtp_url: str | None = None
    mail_from: str = "video2mp3 <no-reply@video2mp3.local>"
    public_url: str = "http://127.0.0.1:8000"
    auth_urls: str = "http://127.0.0.1:8001"
    notification_urls: str = "http://127.0.0.1:8002"
    blob_store: str = Field(default="file", pattern="^(file|gridfs)$")
    blob_dir: Path | None = None
    var_dir: Path = Path("./var")
    max_upload_bytes: int = Field(default=2 * GIB, gt=0)
    converter_concurrency: int = Field(default_factory=_cpu_count, gt=0)
    ffmpeg_path: str | None = None
    # Sources are deleted right after a successful conversion (0) or kept this many days.
    source_retention_days: float = Field(default=0.0, ge=0)
    # MP3s (and their download links) expire after this many days.
    output_retention_days: float = Field(default=7.0, gt=0)
    # Seconds between sweeps of expired files, leftovers and stuck jobs.
    retention_sweep_interval: float = Field(default=600.0, gt=0)
    # A queued or processing job untouched for this long is failed by the sweep.
    stuck_job_hours: float = Field(default=24.0, gt=0)
    # A job still queued this long after its last publish is published again (its message may
    # have been lost: a purged queue, another install's consumer).
    requeue_after_seconds: float = Field(default=120.0, gt=0)
    # The longest source converted (6 h): a few KB of silence may claim days of audio.
    max_source_seconds: float = Field(default=21600.0, gt=0)
    # Uploads are refused (507) and converters hold their jobs below this much free space.
    min_free_bytes: int = Field(default=GIB, ge=0)
    # On SIGTERM running conversions get this long to finish; the rest go back to the queue.
    converter_shutdown_grace: float = Field(default=30.0, ge=0)
    # Resumable (tus) uploads not finished this long after their creation are removed.
    upload_expiry_hours: float = Field(default=24.0, gt=0)

    bind_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8000, ge=1, le=65535)
    auth_port: int = Field(default=8001, ge=1, le=65535)
    notification_port: int = Field(default=8002, ge=1, le=65535)
    converter_port: int = Field(default=8003, ge=1, le=65535)

    jwt_private_key: str | None = None
    jwt_private_key_file: Path | None = None
    jwt_issuer: str = "video2mp3-auth"
    jwt_audience: str = "video2mp3"
    access_token_ttl: int = Field(default=900, gt=0)
    refresh_token_ttl: int = Field(default=30 * 24 * 3600, gt=0)
    link_secret: str | None = None
    link_secret_file: Path | None = None
    download_link_ttl: int = Field(default=7 * 24 * 3600, gt=0)

    # How long a mail that the SMTP server does not accept is retried (with backoff) before it is
    # recorded as failed.
    smtp_retry_window: float = 900.0
    # FFmpeg is killed after FFMPEG_TIMEOUT_BASE + FFMPEG_TIMEOUT_FACTOR * source duration.
    ffmpeg_timeout_base: float = 60.0
    ffmpeg_timeout_factor: float = 2.0

    # Browser origins other than the gateway's own (scheme://host[:port], comma-separated) that
    # may call the API and open its WebSocket; empty: same origin only.
    cors_origins: str = ""
    # Addresses or CIDR blocks (comma-separated) whose X-Forwarded-For auth believes.
    trusted_proxies: str = "127.0.0.1,::1"
    # Login brute-force protection: failed logins per account / per client address in a window.
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_window_seconds: int = Field(default=900, ge=1)
    # Sign-ups (each costs a full Argon2 hash) per client address in LOGIN_WINDOW_SECONDS.
    signup_max_per_address: int = Field(default=10, ge=1)

    # Who may create an account: anyone (`open`), holders of an admin's invite (`invite`), nobody
    # but ADMIN_EMAILS and `video2mp3 admin create-user` (`closed`).
    registration: str = Field(default="open", pattern="^(open|invite|closed)$")
    # Comma-separated addresses that are admins (the first account always is) and may register
    # whatever REGISTRATION says.
    admin_emails: str = ""
    # Registration mails a link that proves the address; job mails go only to proven addresses.
    # false: every address counts as proven (an install whose operator vouches for its users).
    verify_emails: bool = True

    # Per-account limits (0: unlimited); an admin may set other values for one account.
    user_max_active_jobs: int = Field(default=20, ge=0)
    user_storage_bytes: int = Field(default=10 * GIB, ge=0)
    user_jobs_per_day: int = Field(default=500, ge=0)
    # Per-account caps on what one client holds open (0: unlimited): multipart uploads in flight
    # (counted across gateways) and live WebSockets (per gateway process).
    user_max_uploads: int = Field(default=4, ge=0)
    user_max_sockets: int = Field(default=10, ge=0)
    # An upload that has not finished this long after it began is cut off (408).
    upload_deadline_seconds: float = Field(default=3600.0, gt=0)

    # CIDRs (comma-separated) that webhooks and URL imports may reach although the outbound
    # guard refuses loopback, private, link-local and reserved addresses.
    outbound_allow_nets: str = ""
    # How long a failing webhook delivery is retried before its endpoint is disabled (seconds).
    webhook_retry_window: float = Field(default=86400.0, gt=0)

    # Connections one service process holds at once (live sockets included); past it new
    # requests get 503, so a flood cannot exhaust the process's memory or descriptors.
    max_connections: int = Field(default=2000, gt=0)

    # Seconds every outbound network call may take before it is abandoned.
    network_timeout: float = 10.0
    log_level: str = "INFO"
    log_json: bool = False

    @property
    def resolved_blob_dir(self) -> Path:
        return (self.blob_dir or self.var_dir / "blobs").resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'auth.db').resolve()}"

    @property
    def admin_email_list(self) -> list[str]:
        return [e.strip() for e in self.admin_emails.split(",") if e.strip()]

    @property
    def auth_url_list(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.auth_urls.split(",") if u.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def notification_url_list(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.notification_urls.split(",") if u.strip()]

    @property
    def secrets_dir(self) -> Path:
        return self.var_dir / "secrets"

    @cached_property
    def link_key(self) -> bytes:
        """The key that signs emailed download links (shared by gateway and notification)."""
        if self.link_secret:
            return self.link_secret.encode()
        if self.link_secret_file:
            return self.link_secret_file.read_bytes().strip()
        # Text, not raw bytes: a secret file is read back stripped, and random bytes may begin or
        # end with what strip() removes.
        return load_or_create_secret(
            self.secrets_dir / "link.key", lambda: secrets.token_urlsafe(32).encode()
        )

    def require_mongo_url(self) -> str:
        if not self.mongo_url:
            raise RuntimeError("MONGO_URL is not set (video2mp3 up starts an embedded server)")
        return self.mongo_url


def load_or_create_secret(path: Path, make: Callable[[], bytes]) -> bytes:
    """Read a secret file, creating it with mode 0600 the first time.

    Creation is atomic (written aside, then linked into place), so processes starting together
    all end up with the one secret that won. Called at start-up only, before anything is served,
    so plain file I/O is fine.
    """
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = make().strip()
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, value)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)
    except FileExistsError:
        value = path.read_bytes().strip()
    finally:
        temp.unlink()
    return value


def get_settings() -> Settings:
    return Settings()
