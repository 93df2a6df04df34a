"""The whole path through real processes: register, upload, convert, email, download."""

from __future__ import annotations

import asyncio
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from shared.links import sign_download_token
from shared.mongo import mongo_client
from shared.settings import Settings
from tests.e2e.conftest import register_and_login
from tests.support.media import MediaFactory, decode
from tests.support.smtp import SmtpCatcher, download_link
from tests.support.stack import Stack


def auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": user["authorization"]}


async def upload(
    client: httpx.AsyncClient, user: dict[str, str], path: Path, name: str | None = None
) -> httpx.Response:
    with path.open("rb") as f:
        return await client.post(
            "/v1/jobs",
            headers=auth(user),
            files={"file": (name or path.name, f, "application/octet-stream")},
        )


async def wait_final(
    client: httpx.AsyncClient, user: dict[str, str], job_id: str, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/v1/jobs/{job_id}", headers=auth(user))
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job stuck in {job['status']}"
        await asyncio.sleep(0.2)


async def mail_to(smtp: SmtpCatcher, address: str, timeout: float = 30) -> EmailMessage:
    deadline = time.monotonic() + timeout
    while True:
        for message in smtp.messages:
            if address in str(message["To"]):
                return message
        assert time.monotonic() < deadline, f"no mail to {address}"
        await asyncio.sleep(0.1)


def stack_settings(stack: Stack) -> Settings:
    return Settings(var_dir=Path(stack.env["VAR_DIR"]))


async def test_upload_convert_email_download(
    client: httpx.AsyncClient,
    user: dict[str, str],
    media: MediaFactory,
    smtp: SmtpCatcher,
    tmp_path: Path,
) -> None:
    source = media.h264_aac(10)
    response = await upload(client, user, source, "holiday video.mp4")
    assert response.status_code == 202, response.text
    created = response.json()
    assert response.headers["location"] == f"/v1/jobs/{created['id']}"
    assert created["status"] == "queued"

    job = await wait_final(client, user, created["id"])
    assert job["status"] == "completed", job
    assert job["progress"] == 100
    assert job["source"]["audio_codec"] == "aac"
    assert job["output"]["download_url"] == f"/v1/jobs/{job['id']}/download"

    direct = await client.get(job["output"]["download_url"], headers=auth(user))
    assert direct.status_code == 200
    assert direct.headers["content-type"] == "audio/mpeg"
    assert "filename*=UTF-8''holiday%20video.mp3" in direct.headers["content-disposition"]
    (tmp_path / "direct.mp3").write_bytes(direct.content)
    decoded = decode(tmp_path / "direct.mp3")
    assert decoded.codec == "mp3"
    assert decoded.channels == 2
    assert abs(decoded.duration - decode(source).duration) <= 0.15

    message = await mail_to(smtp, user["email"])
    link = download_link(message)
    assert link.startswith(client.base_url.join("/").__str__().rstrip("/"))
    by_link = await client.get(link)  # no login needed
    assert by_link.status_code == 200, (link, by_link.text)
    assert by_link.content == direct.content

    # The short-lived stream link needs no token (an <audio> element cannot send one) and seeks.
    streamed = await client.get(job["output"]["stream_url"], headers={"Range": "bytes=0-99"})
    assert streamed.status_code == 206
    assert streamed.content == direct.content[:100]

    ranged = await client.get(
        job["output"]["download_url"], headers={**auth(user), "Range": "bytes=100-199"}
    )
    assert ranged.status_code == 206
    assert ranged.content == direct.content[100:200]
    assert ranged.headers["content-range"] == f"bytes 100-199/{len(direct.content)}"

    # HEAD, as players and download managers probe: GET's headers, no body.
    probed = await client.head(job["output"]["download_url"], headers=auth(user))
    assert probed.status_code == 200
    assert probed.content == b""
    for name in ("content-length", "content-type", "content-disposition", "accept-ranges"):
        assert probed.headers[name] == direct.headers[name], name
    probed = await client.head(job["output"]["stream_url"], headers={"Range": "bytes=100-199"})
    assert probed.status_code == 206
    assert probed.headers["content-length"] == "100"
    assert probed.headers["content-range"] == ranged.headers["content-range"]

    listed = await client.get("/v1/jobs", headers=auth(user))
    assert [j["id"] for j in listed.json()["items"]] == [job["id"]]

    notes = await client.get("/v1/notifications", headers=auth(user))
    assert notes.status_code == 200
    assert [n["job_id"] for n in notes.json()["items"]] == [job["id"]]
    assert notes.json()["items"][0]["read"] is False
    marked = await client.post("/v1/notifications/read", headers=auth(user), json={})
    assert marked.status_code == 204
    notes = await client.get("/v1/notifications", headers=auth(user))
    assert notes.json()["items"][0]["read"] is True


async def test_real_51_source_gives_stereo_mp3(
    client: httpx.AsyncClient, user: dict[str, str], shared_media: Path, tmp_path: Path
) -> None:
    response = await upload(client, user, shared_media / "bigbuckbunny.mp4")
    assert response.status_code == 202, response.text
    job = await wait_final(client, user, response.json()["id"])
    assert job["status"] == "completed", job
    assert job["source"]["channels"] == 6
    mp3 = await client.get(job["output"]["download_url"], headers=auth(user))
    (tmp_path / "bbb.mp3").write_bytes(mp3.content)
    decoded = decode(tmp_path / "bbb.mp3")
    assert decoded.channels == 2
    assert abs(decoded.duration - 5.3) < 0.2


async def test_video_without_audio_fails_clearly(
    client: httpx.AsyncClient, user: dict[str, str], shared_media: Path, smtp: SmtpCatcher
) -> None:
    response = await upload(client, user, shared_media / "cityCC0.mpg")
    assert response.status_code == 202, response.text
    job = await wait_final(client, user, response.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "no_audio_stream"
    assert job["output"] is None
    # Described by the write that recorded the failure (the job was too short for its own).
    assert job["source"]["container"] == "mpeg"
    assert job["source"]["video_codec"] == "mpeg2video"
    download = await client.get(f"/v1/jobs/{job['id']}/download", headers=auth(user))
    assert download.status_code == 409
    assert download.json()["code"] == "not_ready"
    message = await mail_to(smtp, user["email"])
    assert "no audio" in str(message.get_body(preferencelist=("plain",)))


async def test_truncated_mp4_fails_instead_of_hanging(
    client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory, tmp_path: Path
) -> None:
    whole = media.h264_aac(5).read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(whole[: len(whole) // 2])
    response = await upload(client, user, broken)
    assert response.status_code == 202, response.text
    job = await wait_final(client, user, response.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] in ("unreadable_media", "conversion_failed")
    assert job["error"]["detail"]


async def stored_blobs(stack: Stack) -> list[str]:
    """Every blob the stack holds, whichever backend it runs: files, or GridFS files and chunks."""
    if stack.env["BLOB_STORE"] == "file":
        root = Path(stack.env["VAR_DIR"]) / "blobs"
        return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    client = mongo_client(stack.env["MONGO_URL"])
    try:
        db = client[stack.env["MONGO_DB"]]
        files = [f"file:{d['_id']}" async for d in db["fs.files"].find({}, {"_id": 1})]
        chunk_owners = {
            d["files_id"] async for d in db["fs.chunks"].find({}, {"files_id": 1, "n": 1})
        }
        return sorted(files + [f"chunks:{c}" for c in chunk_owners])
    finally:
        await client.close()


async def test_text_file_named_mp4_is_refused(
    client: httpx.AsyncClient, user: dict[str, str], stack: Stack, tmp_path: Path
) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are not the frames you are looking for\n" * 200)
    before = await stored_blobs(stack)
    response = await upload(client, user, fake)
    assert response.status_code == 415
    assert response.json()["code"] == "not_media"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    response = await upload(client, user, empty)
    assert response.status_code == 422
    assert response.json()["code"] == "empty_file"
    assert await stored_blobs(stack) == before
    assert (await client.get("/v1/jobs", headers=auth(user))).json()["items"] == []


async def test_upload_over_limit_is_cut_off(
    client: httpx.AsyncClient, user: dict[str, str], stack: Stack, tmp_path: Path
) -> None:
    limit = int(stack.env["MAX_UPLOAD_BYTES"])
    big = tmp_path / "big.mp4"
    with big.open("wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42")
        f.truncate(limit + 1024 * 1024)
    before = await stored_blobs(stack)
    response = await upload(client, user, big)
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"

    async def chunked() -> Any:
        boundary = b"--x1"
        yield (
            boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="b.mp4"\r\n\r\n'
        )
        yield b"\x00\x00\x00\x18ftypmp42"
        block = b"\0" * (1024 * 1024)
        for _ in range(limit // len(block) + 2):
            yield block
        yield b"\r\n" + boundary + b"--\r\n"

    # No Content-Length: the limit must hold on the streamed body too.
    response = await client.post(
        "/v1/jobs",
        headers={**auth(user), "Content-Type": "multipart/form-data; boundary=x1"},
        content=chunked(),
    )
    assert response.status_code == 413
    assert await stored_blobs(stack) == before
    assert (await client.get("/v1/jobs", headers=auth(user))).json()["items"] == []


async def test_other_users_job_is_invisible(
    client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory
) -> None:
    response = await upload(client, user, media.h264_aac(2))
    job = await wait_final(client, user, response.json()["id"])
    stranger = await register_and_login(client)
    for method, path in (
        ("GET", f"/v1/jobs/{job['id']}"),
        ("GET", f"/v1/jobs/{job['id']}/download"),
        ("DELETE", f"/v1/jobs/{job['id']}"),
    ):
        answer = await client.request(method, path, headers=auth(stranger))
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["code"] == "not_found"
    assert (await client.get("/v1/jobs", headers=auth(stranger))).json()["items"] == []
    assert (await client.get(f"/v1/jobs/{job['id']}", headers=auth(user))).status_code == 200


async def test_requests_without_token_are_401(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/abc"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/notifications"),
        ("GET", "/v1/auth/me"),
    ):
        answer = await client.request(method, path)
        assert answer.status_code == 401, (method, path)
    bad = await client.get("/v1/jobs", headers={"Authorization": "Bearer not.a.jwt"})
    assert bad.status_code == 401
    assert bad.json()["code"] == "invalid_token"


async def test_download_links_expire_and_cannot_be_forged(
    client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory, stack: Stack
) -> None:
    response = await upload(client, user, media.h264_aac(2))
    job = await wait_final(client, user, response.json()["id"])
    key = stack_settings(stack).link_key
    expired = sign_download_token(key, job["id"], ttl=-10)
    answer = await client.get(f"/v1/downloads/{expired}")
    assert answer.status_code == 410
    assert answer.json()["code"] == "link_expired"
    forged = sign_download_token(b"another key", job["id"], ttl=3600)
    assert (await client.get(f"/v1/downloads/{forged}")).status_code == 404
    good = sign_download_token(key, job["id"], ttl=3600)
    assert (await client.get(f"/v1/downloads/{good}")).status_code == 200


async def test_delete_removes_job_and_files(
    client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory, stack: Stack
) -> None:
    before = await stored_blobs(stack)
    response = await upload(client, user, media.h264_aac(2))
    job = await wait_final(client, user, response.json()["id"])
    assert job["status"] == "completed"
    assert (await client.delete(f"/v1/jobs/{job['id']}", headers=auth(user))).status_code == 204
    assert (await client.get(f"/v1/jobs/{job['id']}", headers=auth(user))).status_code == 404
    assert await stored_blobs(stack) == before
