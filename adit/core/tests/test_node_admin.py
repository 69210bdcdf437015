import pytest
from django.core.management import call_command

from adit.accounts.models import User
from adit.core.dicom.orthanc import free_ports
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
