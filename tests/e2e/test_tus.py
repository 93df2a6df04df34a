"""`/v1/uploads` (tus 1.0.0) through the real processes, on both blob stores: the protocol's
answers, every refusal, and the job that the last byte makes (exactly once)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import register_and_login
from tests.e2e.test_pipeline import auth, wait_final
from tests.support.media import MediaFactory, decode
from tests.support.stack import Stack

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


async def create(
    client: httpx.AsyncClient, user: dict[str, str], length: int, **meta: str
) -> httpx.Response:
    headers = {**TUS, **auth(user), "Upload-Length": str(length)}
    if meta:
        headers["Upload-Metadata"] = metadata(**meta)
    return await client.post("/v1/uploads", headers=headers)


async def created(client: httpx.AsyncClient, user: dict[str, str], length: int, **meta: str) -> str:
    response = await create(client, user, length, **meta)
    assert response.status_code == 201, response.text
    assert response.headers["Tus-Resumable"] == "1.0.0"
    location = response.headers["Location"]
    assert location.startswith("/v1/uploads/")
    return location


async def patch(
    client: httpx.AsyncClient, user: dict[str, str], url: str, offset: int, data: bytes
) -> httpx.Response:
    headers = {**TUS, **OCTETS, **auth(user), "Upload-Offset": str(offset)}
    return await client.patch(url, headers=headers, content=data)


async def head(client: httpx.AsyncClient, user: dict[str, str], url: str) -> httpx.Response:
    return await client.head(url, headers={**TUS, **auth(user)})


@pytest.fixture(scope="module")
def clip(media: MediaFactory) -> Path:
    return media.h264_aac(seconds=3)


async def test_options_advertise_the_protocol(client: httpx.AsyncClient, stack: Stack) -> None:
    response = await client.options("/v1/uploads")
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
    }
    assert response.headers["Tus-Max-Size"] == stack.env["MAX_UPLOAD_BYTES"]


async def test_an_upload_in_pieces_becomes_a_job(
    client: httpx.AsyncClient, user: dict[str, str], clip: Path
) -> None:
    data = clip.read_bytes()
    url = await created(client, user, len(data), filename="holiday.mp4", bitrate="96")
    status = await head(client, user, url)
    assert status.status_code == 200
    assert status.headers["Upload-Offset"] == "0"
    assert status.headers["Upload-Length"] == str(len(data))
    assert status.headers["Cache-Control"] == "no-store"
    assert status.headers["Upload-Metadata"] == metadata(filename="holiday.mp4", bitrate="96")
    assert "Upload-Expires" in status.headers

    cut = len(data) // 3
    first = await patch(client, user, url, 0, data[:cut])
    assert first.status_code == 204, first.text
    assert first.headers["Upload-Offset"] == str(cut)
    assert "Upload-Expires" in first.headers
    assert "Location" not in first.headers
    assert (await head(client, user, url)).headers["Upload-Offset"] == str(cut)

    last = await patch(client, user, url, cut, data[cut:])
    assert last.status_code == 204, last.text
    assert last.headers["Upload-Offset"] == str(len(data))
    job_id = last.headers["Job-Id"]
    assert last.headers["Location"] == f"/v1/jobs/{job_id}"

    job = await wait_final(client, user, job_id)
    assert job["status"] == "completed", job
    assert job["filename"] == "holiday.mp4"
    assert job["options"]["bitrate"] == 96
    mp3 = await client.get(f"/v1/jobs/{job_id}/download", headers=auth(user))
    assert mp3.status_code == 200
    out = clip.parent / f"{job_id}.mp3"
    out.write_bytes(mp3.content)
    assert abs(decode(out).duration - 3) < 0.15


async def test_creation_with_upload_finishes_in_one_request(
    client: httpx.AsyncClient, user: dict[str, str], clip: Path
) -> None:
    data = clip.read_bytes()
    headers = {**TUS, **OCTETS, **auth(user), "Upload-Length": str(len(data))}
    response = await client.post("/v1/uploads", headers=headers, content=data)
    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith("/v1/uploads/")
    assert response.headers["Upload-Offset"] == str(len(data))
    job = await wait_final(client, user, response.headers["Job-Id"])
    assert job["status"] == "completed", job


async def test_the_last_bytes_make_one_job_however_often_they_come(
    client: httpx.AsyncClient, user: dict[str, str], clip: Path
) -> None:
    data = clip.read_bytes()
    url = await created(client, user, len(data))
    cut = len(data) - 1000
    assert (await patch(client, user, url, 0, data[:cut])).status_code == 204
    answers = await asyncio.gather(*(patch(client, user, url, cut, data[cut:]) for _ in range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert 204 in statuses, statuses
    assert set(statuses) <= {204, 409, 423}, statuses
    job_ids = {a.headers["Job-Id"] for a in answers if a.status_code == 204}
    assert len(job_ids) == 1
    (job_id,) = job_ids
    # Repeated once finished (a client that lost the answer): the same job, no new one.
    again = await patch(client, user, url, len(data), b"")
    assert again.status_code == 204
    assert again.headers["Job-Id"] == job_id
    status = await head(client, user, url)
    assert status.headers["Upload-Offset"] == str(len(data))
    assert status.headers["Job-Id"] == job_id
    jobs = (await client.get("/v1/jobs", headers=auth(user))).json()["items"]
    assert [j["id"] for j in jobs] == [job_id]


async def test_terminated_uploads_are_gone(client: httpx.AsyncClient, user: dict[str, str]) -> None:
    url = await created(client, user, 10_000)
    assert (await patch(client, user, url, 0, b"ID3\x04" + bytes(5000))).status_code == 204
    deleted = await client.delete(url, headers={**TUS, **auth(user)})
    assert deleted.status_code == 204
    assert deleted.headers["Tus-Resumable"] == "1.0.0"
    assert (await head(client, user, url)).status_code == 404
    assert (await patch(client, user, url, 5004, b"x")).status_code == 404


async def test_another_users_upload_is_not_found(
    client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    url = await created(client, user, 10_000)
    other = await register_and_login(client)
    assert (await head(client, other, url)).status_code == 404
    refused = await patch(client, other, url, 0, b"ID3\x04" + bytes(100))
    assert refused.status_code == 404
    assert refused.json()["code"] == "not_found"
    assert (await client.delete(url, headers={**TUS, **auth(other)})).status_code == 404
    assert (await head(client, user, url)).headers["Upload-Offset"] == "0"


async def test_without_credentials_every_method_is_401(
    client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    url = await created(client, user, 10_000)
    nobody: dict[str, str] = {"authorization": "Bearer nonsense"}
    for response in (
        await client.post("/v1/uploads", headers={**TUS, "Upload-Length": "10"}),
        await client.head(url, headers=TUS),
        await client.patch(url, headers={**TUS, **OCTETS, "Upload-Offset": "0"}, content=b"x"),
        await client.delete(url, headers=TUS),
        await patch(client, nobody, url, 0, b"ID3"),
    ):
        assert response.status_code == 401, response.request.method
        assert response.headers["Tus-Resumable"] == "1.0.0"


@pytest.mark.parametrize("version", [None, "0.2.2"])
async def test_a_missing_or_unknown_version_is_412(
    client: httpx.AsyncClient, user: dict[str, str], version: str | None
) -> None:
    url = await created(client, user, 10_000)
    sent = {"Tus-Resumable": version} if version else {}
    for response in (
        await client.post("/v1/uploads", headers={**sent, **auth(user), "Upload-Length": "10"}),
        await client.head(url, headers={**sent, **auth(user)}),
        await client.patch(
            url, headers={**sent, **OCTETS, **auth(user), "Upload-Offset": "0"}, content=b"x"
        ),
        await client.delete(url, headers={**sent, **auth(user)}),
    ):
        assert response.status_code == 412, response.request.method
        assert response.headers["Tus-Version"] == "1.0.0"
    assert (await head(client, user, url)).headers["Upload-Offset"] == "0"  # not processed


async def test_bad_offsets_and_bodies(client: httpx.AsyncClient, user: dict[str, str]) -> None:
    url = await created(client, user, 10_000)
    assert (await patch(client, user, url, 0, b"ID3\x04" + bytes(996))).status_code == 204
    wrong = await patch(client, user, url, 10, b"more")
    assert wrong.status_code == 409
    assert wrong.json()["code"] == "offset_mismatch"
    typed = await client.patch(
        url,
        headers={**TUS, **auth(user), "Upload-Offset": "1000", "Content-Type": "video/mp4"},
        content=b"x",
    )
    assert typed.status_code == 415
    assert typed.json()["code"] == "unsupported_content_type"
    for bad in ("", "-1", "ten"):
        response = await client.patch(
            url, headers={**TUS, **OCTETS, **auth(user), "Upload-Offset": bad}, content=b"x"
        )
        assert response.status_code == 400, bad
    too_long = await patch(client, user, url, 1000, bytes(9001))
    assert too_long.status_code == 413
    assert (await head(client, user, url)).headers["Upload-Offset"] == "1000"


async def test_bad_creations(client: httpx.AsyncClient, user: dict[str, str]) -> None:
    empty = await create(client, user, 0)
    assert empty.status_code == 422
    assert empty.json()["code"] == "empty_file"
    big = await create(client, user, 50 * 1024 * 1024 + 1)
    assert big.status_code == 413
    assert big.json()["code"] == "too_large"
    for headers in (
        {},
        {"Upload-Length": "many"},
        {"Upload-Defer-Length": "1"},
        {"Upload-Length": "10", "Upload-Metadata": "filename not-base64!"},
        {"Upload-Length": "10", "Upload-Metadata": "a YQ==,a YQ=="},
    ):
        response = await client.post("/v1/uploads", headers={**TUS, **auth(user), **headers})
        assert response.status_code == 400, headers
    options = await create(client, user, 10_000, filename="a.mp4", bitrate="7", colour="red")
    assert options.status_code == 422
    assert options.json()["code"] == "invalid_options"
    assert {e["field"] for e in options.json()["errors"]} == {"bitrate", "colour"}
    typed = await client.post(
        "/v1/uploads",
        headers={**TUS, **auth(user), "Upload-Length": "10", "Content-Type": "text/plain"},
        content=b"0123456789",
    )
    assert typed.status_code == 415
    assert typed.json()["code"] == "unsupported_content_type"
    assert (await client.get("/v1/jobs", headers=auth(user))).json()["items"] == []


async def test_what_is_not_media_is_refused_and_terminated(
    client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    url = await created(client, user, 100_000)
    refused = await patch(client, user, url, 0, b"<html>" + bytes(9000))
    assert refused.status_code == 415
    assert refused.json()["code"] == "not_media"
    assert (await head(client, user, url)).status_code == 404
    # Sniffed across requests too: the first bytes may come a few at a time.
    url = await created(client, user, 100_000)
    assert (await patch(client, user, url, 0, b"<ht")).status_code == 204
    refused = await patch(client, user, url, 3, b"ml>" + bytes(5000))
    assert refused.status_code == 415
    assert (await head(client, user, url)).status_code == 404


async def test_method_override_for_clients_that_cannot_patch(
    client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    url = await created(client, user, 10_000)
    headers = {**TUS, **OCTETS, **auth(user), "Upload-Offset": "0"}
    sent = await client.post(
        url, headers={**headers, "X-HTTP-Method-Override": "PATCH"}, content=b"ID3\x04" + bytes(96)
    )
    assert sent.status_code == 204
    assert sent.headers["Upload-Offset"] == "100"
    status = await client.post(url, headers={**TUS, **auth(user), "X-HTTP-Method-Override": "HEAD"})
    assert status.headers["Upload-Offset"] == "100"
    gone = await client.post(url, headers={**TUS, **auth(user), "X-HTTP-Method-Override": "DELETE"})
    assert gone.status_code == 204
    assert (await head(client, user, url)).status_code == 404
    plain = await client.post(url, headers={**TUS, **auth(user)})
    assert plain.status_code in (404, 405)
