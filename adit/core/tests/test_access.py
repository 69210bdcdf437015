"""The one answer to "which servers and folders may this user use as source or destination"."""

import pytest

from adit.accounts.tests.factories import GroupFactory
from adit.core.access import NodeNotUsable, usable_node, usable_nodes, usable_server
from adit.core.models import DicomFolder, DicomServer
from adit.core.tests.factories import DicomFolderFactory, DicomServerFactory, grant

pytestmark = pytest.mark.django_db


def _names(nodes):
    return [node.name for node in nodes]


def test_only_nodes_of_the_active_group_are_usable(member):
    thorax = member.groups.get(name="Thoraxklinik")
    neuro = member.groups.get(name="Neuroradiologie")
    pacs = DicomServerFactory(name="PACS")
    archive = DicomServerFactory(name="Archive")
    grant(pacs, thorax, source=True)
    grant(archive, neuro, source=True)

    assert _names(usable_nodes(member, "source")) == ["PACS"]
    assert usable_server(member, "source", pk=pacs.pk) == pacs
    with pytest.raises(NodeNotUsable, match=f"^There is no DICOM server {archive.pk} you may"):
        usable_server(member, "source", pk=archive.pk)

    member.change_active_group(neuro)
    assert _names(usable_nodes(member, "source")) == ["Archive"]
    assert usable_server(member, "source", pk=archive.pk) == archive
    with pytest.raises(NodeNotUsable):
        usable_server(member, "source", pk=pacs.pk)


def test_the_role_flag_must_be_on_the_access_row_of_the_active_group(member):
    """A source right of another group never adds to a destination right of the active one."""
    thorax = member.groups.get(name="Thoraxklinik")
    pacs = DicomServerFactory(name="PACS")
    grant(pacs, thorax, destination=True)
    grant(pacs, GroupFactory(name="Other"), source=True)

    assert _names(usable_nodes(member, "source")) == []
    assert _names(usable_nodes(member, "destination")) == ["PACS"]
    assert usable_server(member, "destination", pk=pacs.pk) == pacs
    with pytest.raises(NodeNotUsable) as refused:
        usable_server(member, "source", pk=pacs.pk)
    assert refused.value.message == f"There is no DICOM server {pacs.pk} you may use as a source."


def test_an_unknown_id_is_refused_like_an_inaccessible_one(member):
    with pytest.raises(NodeNotUsable) as refused:
        usable_node(member, "destination", pk=987654)
    assert str(refused.value) == (
        "There is no DICOM server or folder 987654 you may use as a destination."
    )


def test_a_folder_is_refused_where_a_server_is_needed(member):
    thorax = member.groups.get(name="Thoraxklinik")
    folder = DicomFolderFactory(name="Share")
    grant(folder, thorax, source=True, destination=True)

    assert _names(usable_nodes(member, "source", servers_only=True)) == []
    with pytest.raises(NodeNotUsable) as refused:
        usable_server(member, "source", pk=folder.pk)
    assert refused.value.message == f"There is no DICOM server {folder.pk} you may use as a source."
    with pytest.raises(NodeNotUsable, match="^There is no DICOM server “Share” you may"):
        usable_server(member, "destination", name="Share")
    # Where a folder will do, the folder itself comes back, not its DicomNode row.
    found = usable_node(member, "destination", name="Share")
    assert isinstance(found, DicomFolder)
    assert found.path == folder.path


def test_a_server_is_found_by_id_name_or_ae_title_as_the_concrete_server(member):
    thorax = member.groups.get(name="Thoraxklinik")
    pacs = DicomServerFactory(name="PACS", ae_title="PACS_AE")
    grant(pacs, thorax, source=True)

    for found in (
        usable_server(member, "source", pk=pacs.pk),
        usable_server(member, "source", name="PACS"),
        usable_server(member, "source", ae_title="PACS_AE"),
        usable_node(member, "source", ae_title="PACS_AE"),
    ):
        assert isinstance(found, DicomServer)
        assert (found.pk, found.ae_title) == (pacs.pk, "PACS_AE")


def test_the_message_names_the_node_as_the_user_did_and_what_they_wanted(member):
    with pytest.raises(NodeNotUsable) as refused:
        usable_node(member, "source", ae_title="NOSUCH\n")
    assert refused.value.message == (
        "There is no DICOM server with AE title “NOSUCH\\x0a” you may use as a source."
    )
    with pytest.raises(NodeNotUsable) as refused:
        usable_server(member, "source", pk=5, use="download from")
    assert refused.value.message == "There is no DICOM server 5 you may download from."


def test_users_without_an_active_group_may_use_nothing(member):
    pacs = DicomServerFactory(name="PACS")
    grant(pacs, member.groups.get(name="Thoraxklinik"), source=True)
    member.active_group = None
    member.save()

    assert _names(usable_nodes(member, "source")) == []
    with pytest.raises(NodeNotUsable):
        usable_server(member, "source", pk=pacs.pk)
