"""`video2mp3 convert` against a running stack, as a user would run it (no TTY here)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from services.cli.credentials import password_login, save_refresh_token
from tests.conftest import StackFactory
from tests.e2e.conftest import register_and_login
from tests.support.media import MediaFactory, decode
from tests.support.procs import descendants_of, name_of
from tests.support.smtp import SmtpCatcher
from tests.support.stack import Stack


async def run_cli(
    stack: Stack, user: dict[str, str], *args: str, home: Path, server: str | None = None
) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "VIDEO2MP3_EMAIL": user["email"],
        "VIDEO2MP3_PASSWORD": "correct horse battery staple",
        "XDG_CONFIG_HOME": str(home),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "convert", *args,
        "--server", server or stack.gateway_url,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_converts_two_files_at_once(
    stack: Stack,
    client: httpx.AsyncClient,
    user: dict[str, str],
    media: MediaFactory,
    tmp_path: Path,
) -> None:
    first = media.h264_aac(4, name="first clip.mp4")
    second = media.h264_aac(6, name="second.mp4")
    out = tmp_path / "out"
    code, stdout, stderr = await run_cli(
        stack, user, str(first), str(second), "-o", str(out), home=tmp_path
    )
    assert code == 0, stderr
    assert abs(decode(out / "first clip.mp3").duration - 4) < 0.15
    assert abs(decode(out / "second.mp3").duration - 6) < 0.15
    assert "first clip.mp4: queued" in stdout
    # It never overwrites without --force.
    code, _, stderr = await run_cli(stack, user, str(first), "-o", str(out), home=tmp_path)
    assert code != 0
    assert "exists" in stderr


async def test_cli_reports_a_failure_and_exits_1(
    stack: Stack, user: dict[str, str], shared_media: Path, tmp_path: Path
) -> None:
    code, _, stderr = await run_cli(
        stack, user, str(shared_media / "cityCC0.mpg"), "-o", str(tmp_path), home=tmp_path
    )
    assert code == 1
    assert "cityCC0.mpg: failed: the file has no audio track" in stderr
    assert not (tmp_path / "cityCC0.mp3").exists()


async def test_ctrl_c_cancels_the_running_job(
    stack: Stack,
    client: httpx.AsyncClient,
    user: dict[str, str],
    media: MediaFactory,
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "VIDEO2MP3_EMAIL": user["email"],
        "VIDEO2MP3_PASSWORD": "correct horse battery staple",
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "convert", str(media.long_tone()),
        "-o", str(tmp_path), "--server", stack.gateway_url,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    while True:  # wait until the server is converting it
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line, "the CLI ended early"
        if "converting" in line:
            break
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 130
    jobs = (await client.get("/v1/jobs", headers={"Authorization": user["authorization"]})).json()
    assert [j["status"] for j in jobs["items"]] == ["cancelled"]
    assert not list(tmp_path.glob("*.mp3"))
    assert proc.stderr is not None
    assert "Task exception was never retrieved" not in (await proc.stderr.read()).decode()


async def test_two_inputs_that_would_become_one_mp3_are_refused(
    stack: Stack, user: dict[str, str], media: MediaFactory, tmp_path: Path
) -> None:
    # a.mp4 and other/a.mp4 both become out/a.mp3: one would silently replace the other.
    first = media.h264_aac(2, name="same.mp4")
    (tmp_path / "other").mkdir()
    second = tmp_path / "other" / "same.mp4"
    second.write_bytes(first.read_bytes())
    code, _, stderr = await run_cli(
        stack, user, str(first), str(second), "-o", str(tmp_path / "out"), home=tmp_path
    )
    assert code != 0
    assert "would both become" in stderr
    assert not (tmp_path / "out").exists()


async def test_a_run_outlasts_its_access_token(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory, tmp_path: Path
) -> None:
    # Tokens of 3 s: the socket closes when the token expires, and polling with the expired
    # token got 401s the CLI took for "not finished yet", forever.
    async with private_stack(smtp.url, ACCESS_TOKEN_TTL="3") as stack:
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
            user = await register_and_login(http)
        source = media.long_tone()
        code, _, stderr = await run_cli(
            stack, user, str(source), "-o", str(tmp_path / "out"), home=tmp_path
        )
    assert code == 0, stderr
    assert abs(decode(tmp_path / "out" / f"{source.stem}.mp3").duration - 1800) < 1


async def test_conversion_options_are_flags(
    stack: Stack, user: dict[str, str], media: MediaFactory, tmp_path: Path
) -> None:
    source = media.h264_aac(4, name="flags.mp4")
    out = tmp_path / "out"
    code, _, stderr = await run_cli(
        stack, user, str(source), "-o", str(out),
        "--format", "opus", "--start", "1", "--normalize", "--title", "From the CLI",
        home=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    decoded = decode(out / "flags.opus")
    assert decoded.codec == "opus"
    assert abs(decoded.duration - 3) < 0.15
    # A bad value is refused before anything is uploaded, named as the flag it came from.
    code, _, stderr = await run_cli(
        stack, user, str(source), "-o", str(out), "--bitrate", "7", home=tmp_path
    )
    assert code == 2
    assert "--bitrate" in stderr


async def test_two_runs_at_once_share_the_stored_login(
    stack: Stack,
    user: dict[str, str],
    media: MediaFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both runs spent the one stored refresh token: auth took the second use for theft and
    # ended the login, so one run (and every later one) failed until `video2mp3 login`.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        tokens = await password_login(
            http, stack.gateway_url, user["email"], "correct horse battery staple"
        )
    save_refresh_token(stack.gateway_url, tokens["refresh_token"])
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIDEO2MP3_EMAIL", "VIDEO2MP3_PASSWORD")
    }

    async def one(name: str) -> tuple[int | None, bytes]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "convert",
            str(media.h264_aac(2, name=f"{name}.mp4")), "-o", str(tmp_path / name),
            "--server", stack.gateway_url,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, err

    results = await asyncio.gather(one("left"), one("right"))
    assert [code for code, _ in results] == [0, 0], results
    code, err = await one("later")
    assert code == 0, err


async def test_a_machine_that_logged_in_before_gets_past_strangers_lockout(
    stack: Stack,
    client: httpx.AsyncClient,
    user: dict[str, str],
    media: MediaFactory,
    tmp_path: Path,
) -> None:
    # Failing on purpose locked the account for every machine, scripts with
    # VIDEO2MP3_EMAIL/VIDEO2MP3_PASSWORD included (they log in on every run).
    clip = str(media.h264_aac(2, name="known.mp4"))
    known, new = tmp_path / "known", tmp_path / "new"
    code, _, err = await run_cli(stack, user, clip, "-o", str(tmp_path / "1"), home=known)
    assert code == 0, err
    for n in range(8):  # strangers, from addresses of their own
        stranger = await client.post(
            "/v1/auth/login",
            data={"username": user["email"], "password": "not the password"},
            headers={"X-Forwarded-For": f"203.0.113.{n}"},
        )
    assert stranger.status_code == 429
    code, _, err = await run_cli(stack, user, clip, "-o", str(tmp_path / "2"), home=new)
    assert code == 1
    assert "too many failed login attempts" in err
    code, _, err = await run_cli(stack, user, clip, "-o", str(tmp_path / "3"), home=known)
    assert code == 0, err


async def test_a_script_that_cannot_write_its_config_directory_still_logs_in(
    stack: Stack, user: dict[str, str], media: MediaFactory, tmp_path: Path
) -> None:
    # Keeping the device token crashed a run with VIDEO2MP3_EMAIL/PASSWORD and a read-only home.
    clip = str(media.h264_aac(2, name="readonly.mp4"))
    unwritable = Path("/proc/video2mp3-config")  # no one can create a directory here
    code, _, err = await run_cli(stack, user, clip, "-o", str(tmp_path), home=unwritable)
    assert code == 0, err
    assert (tmp_path / "readonly.mp3").exists()


async def test_an_output_directory_that_is_a_file_is_refused_in_one_line(
    stack: Stack, user: dict[str, str], media: MediaFactory, tmp_path: Path
) -> None:
    source = media.h264_aac(2, name="to-a-file.mp4")
    occupied = tmp_path / "occupied"
    occupied.write_text("not a directory")
    code, _, stderr = await run_cli(stack, user, str(source), "-o", str(occupied), home=tmp_path)
    assert code == 2
    assert f"-o {occupied}:" in stderr
    assert "Traceback" not in stderr
    assert occupied.read_text() == "not a directory"


@contextlib.asynccontextmanager
async def upgrade_refusing_proxy(
    target: str, failing_polls: int = 0, polled: set[str] | None = None
) -> AsyncIterator[str]:
    """A proxy in front of `target` that answers every WebSocket upgrade 403, as some do, and
    its first `failing_polls` looks at a job 502. One request per connection, so that it sees
    each one. The status of each job it passed on is added to `polled`."""
    upstream = httpx.URL(target)
    failures_left = [failing_polls]

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"upgrade: websocket" in head.lower():
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0]
        is_poll = request_line.startswith(b"GET /v1/jobs/") and b"/download" not in request_line
        if is_poll and failures_left[0] > 0:
            failures_left[0] -= 1
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(upstream.host, upstream.port)
        up_writer.write(head.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1))
        if not (is_poll and polled is not None):
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            return
        answer = await up_reader.read()  # the whole of it: the upstream closes after one
        up_writer.close()
        status = re.search(rb'"status":\s*"(\w+)"', answer)
        if status is not None:
            polled.add(status[1].decode())
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def test_without_the_live_socket_the_cli_polls_to_the_end(
    stack: Stack, user: dict[str, str], media: MediaFactory, tmp_path: Path
) -> None:
    # Polls come every 2 s and the first two fail. However fast the machine, the job is seen
    # converting: its FFmpeg is paused until a poll has passed on its "processing".
    source = media.long_tone()
    out = tmp_path / "out"
    polled: set[str] = set()
    async with upgrade_refusing_proxy(stack.gateway_url, failing_polls=2, polled=polled) as proxied:
        run = asyncio.ensure_future(
            run_cli(stack, user, str(source), "-o", str(out), home=tmp_path, server=proxied)
        )
        paused = await pause_encodes_until(
            stack, lambda: "processing" in polled or run.done(), within=60
        )
        code, stdout, stderr = await asyncio.wait_for(run, 90)
    assert paused, f"no FFmpeg of the converter's was seen; polled {polled}"
    assert code == 0, stderr
    assert "no live progress" in stderr
    assert "Traceback" not in stderr
    assert f"{source.name}: converting" in stdout
    assert abs(decode(out / f"{source.stem}.mp3").duration - 1800) < 1


async def pause_encodes_until(stack: Stack, condition: Callable[[], bool], within: float) -> bool:
    """Stop the converter's FFmpeg processes (SIGSTOP) as soon as one runs, and let them go on
    once `condition()` holds. False if none ran before the condition held."""
    converter = stack.procs["converter"].pid
    stopped: list[int] = []
    try:
        async with asyncio.timeout(within):
            while not stopped and not condition():
                for pid in await asyncio.to_thread(descendants_of, converter):
                    if (name_of(pid) or "").startswith("ffmpeg"):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGSTOP)
                            stopped.append(pid)
                await asyncio.sleep(0.01)
            while not condition():
                await asyncio.sleep(0.05)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    return bool(stopped)


async def test_login_without_a_terminal_ends_in_one_line(tmp_path: Path) -> None:
    # Ctrl-D at the prompt, or stdin closed in a script: no traceback, nothing stored.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "login", "--server", "http://127.0.0.1:9",
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "login cancelled" in err.decode()
    assert "Traceback" not in err.decode()
    assert not any(tmp_path.rglob("*"))


async def test_login_remembers_the_server_for_a_plain_convert(
    stack: Stack, user: dict[str, str], media: MediaFactory, tmp_path: Path
) -> None:
    # After `login --server URL`, a plain `convert` went to 127.0.0.1:8000 again.
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("VIDEO2MP3_EMAIL", "VIDEO2MP3_PASSWORD", "VIDEO2MP3_SERVER")
        },
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    login = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "login", "--server", stack.gateway_url + "/",
        env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # no terminal: the password is read from stdin
    )  # fmt: skip
    answers = f"{user['email']}\ncorrect horse battery staple\n".encode()
    out, err = await asyncio.wait_for(login.communicate(answers), 60)
    assert login.returncode == 0, err.decode()
    assert f"logged in to {stack.gateway_url} as {user['email']}" in out.decode()

    clip = media.h264_aac(2, name="remembered.mp4")
    convert = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "convert", str(clip), "-o", str(tmp_path),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(convert.communicate(), 120)
    assert convert.returncode == 0, err.decode()
    assert (tmp_path / "remembered.mp3").exists()


async def test_the_server_can_come_from_the_environment(
    stack: Stack, user: dict[str, str], media: MediaFactory, tmp_path: Path
) -> None:
    clip = media.h264_aac(2, name="from-env.mp4")
    env = {
        **os.environ,
        "VIDEO2MP3_EMAIL": user["email"],
        "VIDEO2MP3_PASSWORD": "correct horse battery staple",
        "VIDEO2MP3_SERVER": stack.gateway_url,
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "convert", str(clip), "-o", str(tmp_path),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert (tmp_path / "from-env.mp3").exists()
