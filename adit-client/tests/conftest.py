"""ADIT served by daphne on the test database, the real Orthancs behind it, and a client with
the token of a user whose active group may do everything through the DICOMweb API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from adit_client import AditClient

from adit.core.models import DicomServer
from adit.core.tests.asgi_server import AsgiServer
from adit.core.tests.factories import give_permissions, grant, server_for
from adit.token_authentication.models import Token

EVERY_OPERATION = ("can_query", "can_retrieve", "can_store", "can_retrieve_unpseudonymized")


@pytest.fixture(scope="module")
def adit_http(django_db_setup, django_db_blocker) -> Iterator[AsgiServer]:
    """ADIT over HTTP (tests using it need ``django_db(transaction=True)``: daphne's process
    sees only what was committed)."""
    server = AsgiServer()
    try:
        yield server
    finally:
        server.stop()


def token_of(user) -> str:
    _, plain = Token.objects.create_token(user, "adit-client tests")
    return plain


@pytest.fixture
def token(member) -> str:
    """A token of alice, whose active group may do every operation of the API."""
    give_permissions(member, "dicom_web", *EVERY_OPERATION)
    return token_of(member)


@pytest.fixture
def outsider_token(staff_user) -> str:
    """A token of a user none of whose groups may use the API."""
    return token_of(staff_user)


@pytest.fixture
def source(member, token, orthanc1) -> DicomServer:
    """ORTHANC1 (read-only, the studies of seed 42), a source of alice's group."""
    server = server_for(orthanc1)
    grant(server, member.active_group, source=True)
    return server


@pytest.fixture
def destination(member, token, empty_orthanc2) -> DicomServer:
    """The empty ORTHANC2, a destination of alice's group."""
    server = server_for(empty_orthanc2)
    grant(server, member.active_group, destination=True)
    return server


@pytest.fixture
def client(adit_http, token) -> AditClient:
    return AditClient(adit_http.url, token)
