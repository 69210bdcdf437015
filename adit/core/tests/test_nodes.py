import pytest
from django.core.exceptions import ValidationError

from adit.accounts.tests.factories import GroupFactory, UserFactory
from adit.core.models import DicomNode, DicomServer
from adit.core.tests.factories import DicomFolderFactory, DicomServerFactory, grant

pytestmark = pytest.mark.django_db


def _names(queryset):
    return [node.name for node in queryset]


def test_user_sees_nodes_through_their_active_group_only(member):
    thorax = member.groups.get(name="Thoraxklinik")
    neuro = member.groups.get(name="Neuroradiologie")
    pacs = DicomServerFactory(name="PACS")
    archive = DicomServerFactory(name="Archive")
    grant(pacs, thorax, source=True)
    grant(archive, neuro, source=True)

    assert _names(DicomNode.objects.accessible_by_user(member, "source")) == ["PACS"]
    member.change_active_group(neuro)
    assert _names(DicomNode.objects.accessible_by_user(member, "source")) == ["Archive"]
    assert _names(DicomNode.objects.accessible_by_user(member, "source", all_groups=True)) == [
        "Archive",
        "PACS",
    ]


def test_flag_and_group_must_be_on_the_same_access_row(member):
    """A destination right of one group and a source right of another never add up."""
    thorax = member.groups.get(name="Thoraxklinik")
    other = GroupFactory(name="Other")
    pacs = DicomServerFactory(name="PACS")
    grant(pacs, thorax, destination=True)
    grant(pacs, other, source=True)

    assert _names(DicomNode.objects.accessible_by_user(member, "source")) == []
    assert _names(DicomNode.objects.accessible_by_user(member, "destination")) == ["PACS"]


def test_outsiders_and_anonymous_users_see_nothing(member, client):
    pacs = DicomServerFactory(name="PACS")
    grant(pacs, member.groups.get(name="Thoraxklinik"), source=True, destination=True)
    outsider = UserFactory(username="charlie", groups=[GroupFactory(name="Elsewhere")])
    assert not DicomNode.objects.accessible_by_user(outsider, "source").exists()
    from django.contrib.auth.models import AnonymousUser

    assert not DicomNode.objects.accessible_by_user(AnonymousUser(), "source").exists()


def test_servers_are_listed_before_folders(member):
    thorax = member.groups.get(name="Thoraxklinik")
    grant(DicomFolderFactory(name="A folder"), thorax, destination=True)
    grant(DicomServerFactory(name="Z server"), thorax, destination=True)
    nodes = list(DicomNode.objects.accessible_by_user(member, "destination"))
    assert [str(node) for node in nodes] == ["DICOM Server Z server", "DICOM Folder A folder"]


def test_unknown_role_is_refused(member):
    with pytest.raises(ValueError, match="Unknown node role"):
        DicomNode.objects.accessible_by_user(member, "owner")


@pytest.mark.parametrize(
    ("ae_title", "message"),
    [
        ("", "cannot be blank"),
        ("    ", "must not be empty"),
        ("A" * 17, "at most 16"),
        ("BAD\\AE", "backslash"),
        ("ÄRZTE", "printable ASCII"),
    ],
)
def test_bad_ae_titles_are_refused_with_reason(ae_title, message):
    server = DicomServer(name="X", ae_title=ae_title, host="pacs", port=104)
    with pytest.raises(ValidationError, match=message):
        server.full_clean()


def test_dimse_services_need_host_and_port():
    server = DicomServer(name="X", ae_title="X", study_root_find_support=True)
    with pytest.raises(ValidationError, match="needs a host and a port"):
        server.full_clean()


def test_dicomweb_services_need_a_root_url():
    server = DicomServer(name="X", ae_title="X", dicomweb_qido_support=True)
    with pytest.raises(ValidationError, match="needs its root URL"):
        server.full_clean()
