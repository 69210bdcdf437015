"""A script's user of the API with a token, ADIT served over HTTP by daphne, and clients:
dicomweb-client as scripts use it, against ADIT (both URL layouts) and against the Orthanc
behind it directly, for side-by-side comparisons."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from dicomweb_client.api import DICOMwebClient

from adit.core.models import DicomServer
from adit.core.tests.asgi_server import AsgiServer
from adit.core.tests.factories import give_permissions, grant, server_for
from adit.token_authentication.models import Token

ALL_OPERATIONS = ("can_query", "can_retrieve", "can_store", "can_retrieve_unpseudonymized")


@dataclass
class ApiUser:
    user: object
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


@pytest.fixture
def api_user(member) -> ApiUser:
    """alice, whose active group may do every operation, with a token."""
    give_permissions(member, "dicom_web", *ALL_OPERATIONS)
    _, plain = Token.objects.create_token(member, "tests")
    return ApiUser(member, plain)


@pytest.fixture(params=["dimse", "dicomweb"])
def pacs(request, api_user, orthanc1) -> DicomServer:
    """ORTHANC1 behind ADIT, reached over DIMSE only or over DICOMweb only."""
    if request.param == "dimse":
        server = server_for(orthanc1, name="PACS (DIMSE)")
    else:
        server = server_for(
            orthanc1, name="PACS (DICOMweb)", kind="dicomweb", ae_title="ORTHANC1WEB"
        )
    grant(server, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
    return server


@pytest.fixture(scope="module")
def adit_http(django_db_setup, django_db_blocker) -> Iterator[AsgiServer]:
    """ADIT served by daphne on the test database (tests using it need transaction=True)."""
    server = AsgiServer()
    try:
        yield server
    finally:
        server.stop()


def api_root(base_url: str, server: DicomServer) -> str:
    return f"{base_url}/api/dicom-web/{server.ae_title}"


def adit_client(base_url: str, server: DicomServer, api_user: ApiUser, *, prefixed: bool):
    """dicomweb-client at ADIT: one base URL (PS3.18's root), or upstream's prefixes."""
    root = api_root(base_url, server)
    if prefixed:
        return DICOMwebClient(
            root,
            qido_url_prefix="qidors",
            wado_url_prefix="wadors",
            stow_url_prefix="stowrs",
            headers=api_user.headers,
        )
    return DICOMwebClient(root, headers=api_user.headers)


def orthanc_client(orthanc) -> DICOMwebClient:
    return DICOMwebClient(orthanc.dicomweb_root)
