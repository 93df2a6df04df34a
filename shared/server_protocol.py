"""The HTTP protocol every service runs under uvicorn: httptools with our two byte paths."""

from __future__ import annotations

from shared.bulkbody import BulkBodyProtocol
from shared.pathsend import PathsendProtocol


class ServerProtocol(PathsendProtocol, BulkBodyProtocol):
    """Downloads of whole files with sendfile(2) (shared.pathsend) and large request bodies
    read by a thread in 1 MiB blocks (shared.bulkbody)."""
