"""Users, permissions and nodes as staff would set them up for selective transfer."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from adit.core.models import DicomFolder, DicomServer
from adit.core.tests.factories import grant, server_for

BASIC_PERMISSIONS = ("add_selectivetransferjob", "view_selectivetransferjob")


def give(user, *codenames: str) -> None:
    """Adds permissions of the selective transfer app to the user's active group."""
    group = user.active_group
    for codename in codenames:
        group.permissions.add(
            Permission.objects.get(content_type__app_label="selective_transfer", codename=codename)
        )
    # has_perm caches per user object
    for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        if hasattr(user, cache):
            delattr(user, cache)


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
