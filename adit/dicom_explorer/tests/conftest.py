"""A user allowed to explore, and the two ways ADIT reaches a PACS: DIMSE only, DICOMweb only."""

from __future__ import annotations

import pytest

from adit.core.models import DicomServer
from adit.core.tests.factories import give_permissions, grant, server_for


@pytest.fixture
def explorer_user(member):
    give_permissions(member, "dicom_explorer", "query_dicom_server")
    return member


@pytest.fixture
def logged_in(client, explorer_user):
    client.force_login(explorer_user)
    return client


@pytest.fixture(params=["dimse", "dicomweb"])
def pacs(request, explorer_user, orthanc1) -> DicomServer:
    """ORTHANC1 reached over DIMSE only, or over DICOMweb only (each test runs with both)."""
    if request.param == "dimse":
        server = server_for(orthanc1, name="PACS (DIMSE)")
    else:
        server = server_for(
            orthanc1, name="PACS (DICOMweb)", kind="dicomweb", ae_title="ORTHANC1WEB"
        )
    grant(server, explorer_user.active_group, source=True)
    return server
