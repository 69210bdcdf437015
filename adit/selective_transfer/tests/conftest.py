"""Users, permissions and nodes as staff would set them up for selective transfer."""

from __future__ import annotations

import pytest

from adit.core.tests.factories import give_permissions
from adit.core.tests.node_fixtures import (  # noqa: F401 (fixtures)
    destination_folder,
    destination_server,
    source_server,
)

BASIC_PERMISSIONS = ("add_selectivetransferjob", "view_selectivetransferjob")


def give(user, *codenames: str) -> None:
    """Adds permissions of the selective transfer app to the user's active group."""
    give_permissions(user, "selective_transfer", *codenames)


@pytest.fixture
def researcher(member):
    """alice, allowed to search and transfer (pseudonymized only) in her active group."""
    give(member, *BASIC_PERMISSIONS)
    return member
