"""The nodes a transfer app's tests use, granted to the active group of the app's own
``researcher`` fixture (a conftest imports these next to its ``researcher``)."""

from __future__ import annotations

import pytest

from adit.core.models import DicomFolder, DicomServer
from adit.core.tests.factories import grant, server_for


@pytest.fixture
def source_server(researcher, orthanc1) -> DicomServer:
    server = server_for(orthanc1)
    grant(server, researcher.active_group, source=True)
    return server


@pytest.fixture
def destination_server(researcher, empty_orthanc2) -> DicomServer:
    server = server_for(empty_orthanc2)
    grant(server, researcher.active_group, destination=True)
    return server


@pytest.fixture
def destination_folder(researcher, tmp_path) -> DicomFolder:
    folder = DicomFolder.objects.create(name="Research share", path=str(tmp_path / "share"))
    grant(folder, researcher.active_group, destination=True)
    return folder
