"""The selective transfer page says what keeps a user from using it before they try."""

import pytest

from adit.accounts.tests.factories import UserFactory
from adit.core.models import DicomFolder
from adit.core.tests.factories import DicomServerFactory, grant

from .conftest import give

pytestmark = pytest.mark.django_db

URL = "/selective-transfer/"


def _problems(client) -> str:
    response = client.get(URL)
    assert response.status_code == 200
    return response.content.decode()


def test_a_superuser_without_a_group_is_told_why_the_lists_are_empty(client):
    admin = UserFactory(username="admin", is_superuser=True, is_staff=True)
    client.force_login(admin)

    page = _problems(client)

    assert 'data-testid="setup-problem"' in page
    assert "You are in no group" in page
    assert "add you to a group that may use Selective Transfer" in page


def test_a_group_without_source_or_destination_is_told_so(client, researcher):
    client.force_login(researcher)

    page = _problems(client)

    assert "Your group Thoraxklinik may fetch from no DICOM server" in page
    assert "Your group Thoraxklinik may send studies nowhere" in page
    assert "switch to another of your groups" in page  # alice has two


def test_a_group_with_source_and_destination_sees_no_warning(client, researcher, tmp_path):
    grant(DicomServerFactory(), researcher.active_group, source=True)
    folder = DicomFolder.objects.create(name="Share", path=str(tmp_path))
    grant(folder, researcher.active_group, destination=True)
    give(researcher, "can_download_study")
    client.force_login(researcher)

    page = _problems(client)

    assert 'data-testid="setup-problem"' not in page


def test_the_help_names_the_excluded_modalities_from_the_settings(client, researcher, settings):
    settings.EXCLUDE_MODALITIES = ["SR", "KO"]
    client.force_login(researcher)

    page = _problems(client)

    assert "Series of the modalities SR, KO (presentation states, structured reports)" in page
    assert "A pseudonymized download leaves out the series of the modalities SR, KO" in page
    assert "how many instances are missing" in page
