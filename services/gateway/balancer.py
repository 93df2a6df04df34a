"""Round-robin HTTP calls over several instances of an internal service.

A connection failure moves on to the next instance; any answer (even an error status) is final,
because the request may have had an effect. So is an instance that hung up on a request that
changes something (a POST): it may have done it before it went (a refresh token rotated there
and presented again elsewhere would be taken for a stolen one and end the login).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import httpx

from shared.errors import ErrorCode, Unavailable

log = logging.getLogger(__name__)

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Balancer:
    def __init__(
        self, client: httpx.AsyncClient, urls: list[str], name: str, code: ErrorCode
    ) -> None:
        if not urls:
            raise ValueError(f"no {name} URL configured")
        self._client = client
        self._urls = urls
        self._next = itertools.cycle(range(len(urls)))
        self._name = name
        self._code = code

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        start = next(self._next)
        for i in range(len(self._urls)):
            base = self._urls[(start + i) % len(self._urls)]
            try:
                return await self._client.request(method, base + path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                log.warning("%s instance %s unreachable: %s", self._name, base, exc)
            except httpx.RemoteProtocolError as exc:
                if method.upper() not in _SAFE_METHODS:
                    raise Unavailable(
                        f"the {self._name} service failed mid-request", code=self._code
                    ) from exc
                log.warning("%s instance %s hung up: %s", self._name, base, exc)
            except httpx.TimeoutException as exc:
                raise Unavailable(f"the {self._name} service timed out", code=self._code) from exc
        raise Unavailable(f"the {self._name} service is unavailable", code=self._code)
