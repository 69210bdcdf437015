import shutil
import socket
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def short_tmp_dir():
    """A temporary folder with a short path: a unix socket path may have at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="adit-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
