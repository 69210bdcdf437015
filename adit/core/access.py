"""Which DICOM servers and folders a user may use as a source or a destination, and which
projects they may transfer within.

Every form, page and API that lets a user name a node asks here, so that the access rule (a
DicomNodeGroupAccess row of the user's active group carrying the flag of the role; see
``DicomNodeQuerySet.accessible_by_user``) is applied the same way everywhere.
"""

from __future__ import annotations

from typing import Literal

from django.db.models import QuerySet

from adit.core.models import DicomFolder, DicomNode, DicomNodeQuerySet, DicomServer, Project
from adit.core.validators import shown

Role = Literal["source", "destination"]


class NodeNotUsable(LookupError):
    """The user named a node that does not exist, that they may not use in the role asked
    for, or a folder where only a server will do. All three read the same to the user: which
    of them it is would tell an outsider what exists."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def usable_nodes(user, role: Role, *, servers_only: bool = False, groups=None) -> DicomNodeQuerySet:
    """The nodes the user may use as ``role`` through their active group (or through one of
    ``groups``, for the API, where no group is chosen), servers first (the choices of a form
    field)."""
    nodes = DicomNode.objects.accessible_by_user(user, role, groups=groups)
    if servers_only:
        nodes = nodes.filter(node_type=DicomNode.NodeType.SERVER)
    return nodes


def usable_node(
    user,
    role: Role,
    *,
    pk: int | None = None,
    name: str | None = None,
    ae_title: str | None = None,
    servers_only: bool = False,
    groups=None,
    use: str = "",
) -> DicomServer | DicomFolder:
    """The server or folder the user names by exactly one of ``pk``, ``name`` or ``ae_title``
    (which only servers have), if they may use it as ``role``.

    Args:
        use: How the error message ends, after "you may"; "use as a source" (or destination)
            unless given.

    Raises:
        NodeNotUsable: No such node is usable by the user in that role (or it is a folder
            and ``servers_only`` is set).
    """
    lookups = {"pk": pk, "name": name, "dicomserver__ae_title": ae_title}
    given = {lookup: value for lookup, value in lookups.items() if value is not None}
    assert len(given) == 1, "a node is named by exactly one of pk, name or ae_title"
    nodes = usable_nodes(user, role, servers_only=servers_only, groups=groups)
    node = nodes.filter(**given).first()
    if node is None:
        if pk is not None:
            named = str(pk)
        elif name is not None:
            named = shown(name)
        else:
            named = f"with AE title {shown(str(ae_title))}"
        kind = "DICOM server" if servers_only or ae_title is not None else "DICOM server or folder"
        raise NodeNotUsable(f"There is no {kind} {named} you may {use or f'use as a {role}'}.")
    return node.concrete()


def usable_server(
    user,
    role: Role,
    *,
    pk: int | None = None,
    name: str | None = None,
    ae_title: str | None = None,
    groups=None,
    use: str = "",
) -> DicomServer:
    """The DICOM server the user names, if they may use it as ``role`` (see usable_node).

    Raises:
        NodeNotUsable: No such server is usable by the user in that role; a folder of that
            id or name counts as no such server.
    """
    server = usable_node(
        user,
        role,
        pk=pk,
        name=name,
        ae_title=ae_title,
        servers_only=True,
        groups=groups,
        use=use,
    )
    assert isinstance(server, DicomServer), "servers_only selects servers"
    return server


def usable_node_named(
    user, role: Role, name_or_ae_title: str, *, servers_only: bool = False
) -> DicomServer | DicomFolder:
    """The node a person or script names as they know it: by its name or, for a server, its
    AE title (the name wins where one node's name is another's AE title).

    Raises:
        NodeNotUsable: Neither names a node the user may use as ``role``; the message names
            the node as it was given.
    """
    try:
        return usable_node(user, role, name=name_or_ae_title, servers_only=servers_only)
    except NodeNotUsable as unnamed:
        try:
            return usable_node(user, role, ae_title=name_or_ae_title, servers_only=servers_only)
        except NodeNotUsable:
            raise unnamed from None


def usable_projects(user) -> QuerySet[Project]:
    """The projects the user's active group may transfer within."""
    if user.active_group_id is None:
        return Project.objects.none()
    return Project.objects.filter(groups__id=user.active_group_id).distinct()


def setup_problems(user, app: str, sources=None, destinations=None) -> list[str]:
    """What keeps the user from using the app (its label for people, ``app``) before they
    try: no group, or a group with no source (of ``sources``, when the app needs one) or no
    destination (of ``destinations``)."""
    admins = "Ask an administrator"
    if user.active_group is None:
        return [
            "You are in no group, so no DICOM server or folder is available to you. "
            f"{admins} to add you to a group that may use {app}."
        ]
    group = user.active_group.name
    problems = []
    if sources is not None and not sources.exists():
        problems.append(
            f"Your group {group} may fetch from no DICOM server: {admins} to give it a source."
        )
    if destinations is not None and not destinations.exists():
        problems.append(
            f"Your group {group} may send studies nowhere: {admins} to give it a destination."
        )
    if problems and user.groups.count() > 1:
        problems.append("Or switch to another of your groups on your profile page.")
    return problems
