import pytest
from django.contrib.auth.models import Permission

from adit.accounts.tests.factories import GroupFactory, UserFactory

pytestmark = pytest.mark.django_db


def _grant(group, codename):
    group.permissions.add(Permission.objects.get(codename=codename))


def test_permissions_come_from_the_active_group_only(member):
    thorax, neuro = member.groups.order_by("-name")  # Thoraxklinik, Neuroradiologie
    assert member.active_group == thorax
    _grant(neuro, "view_sectionlock")

    member = type(member).objects.get(pk=member.pk)  # fresh permission cache
    assert not member.has_perm("core.view_sectionlock")

    member.change_active_group(neuro)
    member = type(member).objects.get(pk=member.pk)
    assert member.has_perm("core.view_sectionlock")


def test_own_permissions_count_whatever_the_active_group(member):
    member.user_permissions.add(Permission.objects.get(codename="view_sectionlock"))
    assert member.has_perm("core.view_sectionlock")


def test_superuser_has_every_permission():
    user = UserFactory(username="root")
    user.is_superuser = True
    user.save()
    assert user.has_perm("core.delete_sectionlock")


def test_user_cannot_activate_a_group_they_are_not_in(member):
    with pytest.raises(ValueError, match="not a member"):
        member.change_active_group(GroupFactory(name="Other"))


def test_missing_active_group_is_repaired_on_the_next_request(client, member):
    member.active_group = None
    member.save()
    client.force_login(member)
    response = client.get("/")
    member.refresh_from_db()
    assert member.active_group is not None
    assert member.active_group.name == "Neuroradiologie"  # first by name
    assert "Neuroradiologie" in response.content.decode()


def test_active_group_left_is_replaced(client, member):
    thorax = member.groups.get(name="Thoraxklinik")
    member.groups.remove(thorax)
    client.force_login(member)
    client.get("/")
    member.refresh_from_db()
    assert member.active_group.name == "Neuroradiologie"


def test_profile_switches_active_group(client, member):
    neuro = member.groups.get(name="Neuroradiologie")
    client.force_login(member)
    response = client.post("/accounts/profile/active-group/", {"group": neuro.pk}, follow=True)
    assert "Active group changed to Neuroradiologie." in response.content.decode()
    member.refresh_from_db()
    assert member.active_group == neuro


def test_profile_refuses_a_foreign_group(client, member):
    other = GroupFactory(name="Other")
    client.force_login(member)
    response = client.post("/accounts/profile/active-group/", {"group": other.pk}, follow=True)
    assert "Choose one of your own groups." in response.content.decode()
    member.refresh_from_db()
    assert member.active_group.name == "Thoraxklinik"


def test_user_without_group_is_told_so(client):
    user = UserFactory(username="loner")
    client.force_login(user)
    assert "not a member of any group" in client.get("/").content.decode()
