"""The image's health check finds the port of the service the container runs."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType

import pytest

from services.cli.main import build_parser
from services.cli.serve import service_port
from shared.settings import Settings
from tests.deploy.conftest import DEPLOY


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load()


@pytest.mark.parametrize("name", ["gateway", "auth", "notification", "converter"])
def test_default_port_is_the_services_default(name: str) -> None:
    argv = ["/opt/venv/bin/python", "/opt/venv/bin/video2mp3", "serve", name]
    expected = service_port(name, Settings())
    assert healthcheck.health_url(argv, {}) == f"http://127.0.0.1:{expected}/healthz"


def test_port_flag_wins_over_environment() -> None:
    argv = ["video2mp3", "serve", "auth", "--port", "9001"]
    assert healthcheck.health_url(argv, {"AUTH_PORT": "7000"}) == "http://127.0.0.1:9001/healthz"
    argv = ["video2mp3", "serve", "auth", "--port=9002"]
    assert healthcheck.health_url(argv, {}) == "http://127.0.0.1:9002/healthz"


def test_port_setting_is_used_like_serve_uses_it() -> None:
    env = {"CONVERTER_PORT": "9103"}
    argv = ["video2mp3", "serve", "converter"]
    assert healthcheck.health_url(argv, env) == "http://127.0.0.1:9103/healthz"


def test_bind_host_wildcards_map_to_loopback() -> None:
    argv = ["video2mp3", "serve", "gateway"]
    assert healthcheck.health_url(argv, {"BIND_HOST": "0.0.0.0"}).startswith("http://127.0.0.1:")
    assert healthcheck.health_url(argv, {"BIND_HOST": "10.1.2.3"}).startswith("http://10.1.2.3:")
    assert healthcheck.health_url([*argv, "--host", "::1"], {}).startswith("http://[::1]:")


def test_parser_agrees_with_the_cli() -> None:
    """The flags the health check reads are the ones `video2mp3 serve` accepts."""
    args = build_parser().parse_args(["serve", "notification", "--port", "9002", "--host", "h"])
    assert healthcheck.parse_command(
        ["video2mp3", "serve", "notification", "--port", "9002", "--host", "h"]
    ) == (
        args.name,
        args.port,
        args.host,
    )


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_main_exit_code(server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    port = server.server_address[1]
    monkeypatch.setattr(
        healthcheck,
        "main_command_line",
        lambda: ["video2mp3", "serve", "auth", "--port", str(port)],
    )
    assert healthcheck.main() == 0
    monkeypatch.setattr(_Handler, "status", 503)
    assert healthcheck.main() == 1
    server.shutdown()
    server.server_close()
    assert healthcheck.main() == 1
