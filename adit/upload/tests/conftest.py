"""A researcher who may upload, destinations granted to her group, and files as the upload
page's script sends them (pseudonymized here by the server's own pseudonymizer, which applies
the same profile)."""

from __future__ import annotations

import io

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

from adit.core.models import Project
from adit.core.tests.factories import give_permissions
from adit.core.tests.node_fixtures import (  # noqa: F401 (fixtures)
    destination_folder,
    destination_server,
)
from adit.core.transfer.pseudonymizer import Pseudonymizer

PSEUDONYM = "UPL-0001"


@pytest.fixture
def researcher(member):
    """alice, allowed to upload in her active group."""
    give_permissions(member, "upload", "can_upload_data")
    return member


@pytest.fixture
def project(researcher) -> Project:
    """A project of alice's group: its uploads give an original UID the same new one."""
    project = Project.objects.create(name="Lung study")
    project.groups.add(researcher.active_group)
    return project


@pytest.fixture
def researcher_client(client, researcher):
    client.force_login(researcher)
    return client


def original_instance(name: str = "CT_small.dcm") -> Dataset:
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return dcmread(path)


def encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def pseudonymized_file(
    pseudonym: str = PSEUDONYM, name: str = "CT_small.dcm", secret: str = "upload key"
) -> bytes:
    dataset = original_instance(name)
    Pseudonymizer(pseudonym, secret).pseudonymize(dataset)
    return encoded(dataset)
