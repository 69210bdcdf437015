"""Users, permissions and nodes as staff would set them up for selective transfer."""

from __future__ import annotations

import pytest

from adit.core.models import DicomFolder, DicomServer
from adit.core.tests.factories import give_permissions, grant, server_for

BASIC_PERMISSIONS = ("add_selectivetransferjob", "view_selectivetransferjob")


def give(user, *codenames: str) -> None:
    """Adds permissions of the selective transfer app to the user's active group."""
    give_permissions(user, "selective_transfer", *codenames)


@pytest.fixture
def researcher(member):
    """alice, allowed to search and transfer (pseudonymized only) in her active group."""
    give(member, *BASIC_PERMISSIONS)
    return member


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
