import re

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from adit.accounts.models import User
from adit.core.demo.orthanc import free_ports
from adit.core.models import DicomFolder, DicomNode, DicomServer

pytestmark = pytest.mark.django_db


@pytest.mark.integration
def test_admin_test_connection_shows_result_per_server(client, staff_user, orthanc1):
    staff_user.is_superuser = True
    staff_user.save()
    reachable = DicomServer.objects.create(
        name="Orthanc 1", ae_title="ORTHANC1", host="127.0.0.1", port=orthanc1.dicom_port
    )
    web_only = DicomServer.objects.create(
        name="Orthanc 1 web",
        ae_title="ORTHANC1WEB",
        dicomweb_root_url=orthanc1.dicomweb_root,
        dicomweb_qido_support=True,
    )
    gone = DicomServer.objects.create(
        name="Gone", ae_title="GONE", host="127.0.0.1", port=free_ports(1)[0]
    )
    client.force_login(staff_user)
    response = client.post(
        "/django-admin/core/dicomserver/",
        {
            "action": "test_connection",
            "_selected_action": [reachable.pk, web_only.pk, gone.pk],
        },
        follow=True,
    )
    page = response.content.decode()
    assert "Orthanc 1: C-ECHO succeeded in" in page
    assert "Orthanc 1 web: QIDO-RS succeeded in" in page
    assert "Gone: Could not connect" in page
    assert "connection refused" in page


def test_example_data_gives_each_group_the_demo_nodes(settings):
    call_command("populate_example_data")
    call_command("populate_example_data")  # twice changes nothing

    alice = User.objects.get(username="alice")
    assert alice.check_password("adit-demo")
    assert alice.active_group is not None and alice.active_group.name == "Thoraxklinik"
    sources = DicomNode.objects.accessible_by_user(alice, "source")
    destinations = DicomNode.objects.accessible_by_user(alice, "destination")
    assert [str(node) for node in sources] == ["DICOM Server Orthanc 1"]
    assert [str(node) for node in destinations] == [
        "DICOM Server Orthanc 1",
        "DICOM Server Orthanc 2",
        "DICOM Folder Downloads",
    ]
    orthanc2 = DicomServer.objects.get(ae_title="ORTHANC2")
    assert orthanc2.port == settings.ORTHANC2_DICOM_PORT
    assert orthanc2.dicomweb_root_url == settings.ORTHANC2_URL + "/dicom-web"
    assert DicomFolder.objects.get().path == str(settings.DATA_DIR / "downloads")
    assert DicomServer.objects.count() == 2
    # alice can search and transfer pseudonymized, bob also unpseudonymized
    assert alice.has_perm("selective_transfer.add_selectivetransferjob")
    assert alice.has_perm("selective_transfer.can_download_study")
    assert not alice.has_perm("selective_transfer.can_transfer_unpseudonymized")
    bob = User.objects.get(username="bob")
    assert bob.has_perm("selective_transfer.can_transfer_unpseudonymized")


def test_demo_setup_again_keeps_what_staff_changed(settings):
    call_command("populate_example_data")
    orthanc1 = DicomServer.objects.get(ae_title="ORTHANC1")
    orthanc1.ae_title = "PACS_ONE"
    orthanc1.study_root_get_support = False
    orthanc1.moves_to_destinations = True
    orthanc1.save()
    access = orthanc1.accesses.get(group__name="Neuroradiologie")
    access.source = False
    access.save()
    DicomFolder.objects.filter(name="Downloads").update(path="/srv/exports")
    alice = User.objects.get(username="alice")
    alice.change_active_group(alice.groups.get(name="Studienzentrum"))
    thorax = Group.objects.get(name="Thoraxklinik")
    urgently = Permission.objects.get(
        content_type__app_label="selective_transfer", codename="can_process_urgently"
    )
    thorax.permissions.remove(urgently)

    call_command("populate_example_data")  # as every `cli up --demo` does

    orthanc1.refresh_from_db()
    assert orthanc1.ae_title == "PACS_ONE"
    assert not orthanc1.study_root_get_support
    assert orthanc1.moves_to_destinations
    assert not orthanc1.accesses.get(group__name="Neuroradiologie").source
    assert DicomServer.objects.count() == 2
    assert DicomFolder.objects.get().path == "/srv/exports"
    alice.refresh_from_db()
    assert alice.active_group is not None and alice.active_group.name == "Studienzentrum"
    assert not thorax.permissions.filter(pk=urgently.pk).exists()


@pytest.fixture
def superuser_settings(monkeypatch):
    # Set on the settings themselves: pytest-django's `settings` fixture would hide their
    # SETTINGS_MODULE, by which the demo set-up refuses to run in production.
    monkeypatch.setattr(django_settings, "SUPERUSER_USERNAME", "admin")
    monkeypatch.setattr(django_settings, "SUPERUSER_PASSWORD", "secret-admin-password")
    monkeypatch.setattr(django_settings, "SUPERUSER_AUTH_TOKEN", "")


def test_demo_setup_lets_the_superuser_see_the_demo_nodes(superuser_settings):
    call_command("create_superuser")  # as `cli up --demo` runs them
    call_command("populate_example_data")

    admin = User.objects.get(username="admin")
    sources = DicomNode.objects.accessible_by_user(admin, "source")
    destinations = DicomNode.objects.accessible_by_user(admin, "destination")
    assert [str(node) for node in sources] == ["DICOM Server Orthanc 1"]
    assert [str(node) for node in destinations] == [
        "DICOM Server Orthanc 1",
        "DICOM Server Orthanc 2",
        "DICOM Folder Downloads",
    ]


def test_demo_setup_leaves_a_superuser_with_groups_as_it_is(superuser_settings):
    radiology = Group.objects.create(name="Radiologie")
    admin = User.objects.create_superuser("admin", "", "secret-admin-password")
    admin.groups.add(radiology)
    admin.change_active_group(radiology)

    call_command("populate_example_data")

    assert list(admin.groups.all()) == [radiology]
    admin.refresh_from_db()
    assert admin.active_group == radiology


def test_staff_set_how_many_associations_adit_opens_to_a_server(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    page = client.get("/django-admin/core/dicomserver/add/").content.decode()
    assert 'name="max_associations" value="4"' in page
    (inline,) = re.findall(r'name="([^"]+)-TOTAL_FORMS"', page)
    server = DicomServer.objects.create(
        name="PACS", ae_title="PACS", host="127.0.0.1", port=104, study_root_find_support=True
    )
    form = {
        "name": "PACS",
        "ae_title": "PACS",
        "host": "127.0.0.1",
        "port": "104",
        "study_root_find_support": "on",
        "max_associations": "2",
        f"{inline}-TOTAL_FORMS": "0",
        f"{inline}-INITIAL_FORMS": "0",
    }
    url = f"/django-admin/core/dicomserver/{server.pk}/change/"
    assert client.post(url, form).status_code == 302
    server.refresh_from_db()
    assert server.max_associations == 2

    refused = client.post(url, {**form, "max_associations": "65"})
    assert "Ensure this value is less than or equal to 64." in refused.content.decode()
    server.refresh_from_db()
    assert server.max_associations == 2
