"""The permission matrix of every endpoint of the API, generated from its URL patterns: no
token, a token without the operation's permission, a server of another group, and a user who
may. Endpoints added later are covered without a change here."""

from __future__ import annotations

import pytest
from django.urls import URLPattern

from adit.accounts.tests.factories import GroupFactory
from adit.core.tests.factories import give_permissions, grant, server_for
from adit.dicom_web import urls
from adit.dicom_web.api import RETRIEVE, RETRIEVE_UNPSEUDONYMIZED, DicomWebView
from adit.token_authentication.models import Token

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _methods(pattern: URLPattern) -> dict[str, type[DicomWebView]]:
    callback = pattern.callback
    views = getattr(callback, "views", None)
    if views is None:  # one view: the methods it serves
        views = {method: callback for method in callback.view_class.permissions}  # pyright: ignore[reportFunctionMemberAccess]
    classes = {method: getattr(view, "view_class", None) for method, view in views.items()}
    assert all(isinstance(c, type) and issubclass(c, DicomWebView) for c in classes.values())
    return classes  # pyright: ignore[reportReturnType]


ENDPOINTS = [
    (pattern, method, view_class)
    for pattern in urls.urlpatterns
    if isinstance(pattern, URLPattern)
    for method, view_class in _methods(pattern).items()
]


def _url(pattern: URLPattern, ae_title: str, study) -> str:
    values = {
        "ae_title": ae_title,
        "study_uid": study.study_instance_uid,
        "series_uid": study.series[0].series_instance_uid,
        "sop_uid": study.series[0].sop_instance_uids[0],
        "frames": "1",
    }
    path = str(pattern.pattern)
    for name, value in values.items():
        path = path.replace(f"<str:{name}>", value)
    assert "<" not in path, f"a path parameter the test does not know: {path}"
    return f"/api/dicom-web/{path}"


def _call(client, method: str, url: str, token: str | None):
    headers = {"Authorization": f"Token {token}"} if token else {}
    if method == "POST":
        return client.post(
            url,
            b"--b\r\n\r\n--b--\r\n",
            content_type='multipart/related; type="application/dicom"; boundary=b',
            headers=headers,
        )
    return client.generic(method, url, headers=headers)


@pytest.mark.parametrize(
    "pattern, method, view_class",
    ENDPOINTS,
    ids=[f"{method} {pattern.pattern}" for pattern, method, _ in ENDPOINTS],
)
def test_each_endpoint_checks_token_permission_and_server(
    client, member, orthanc1, orthanc1_studies, pattern, method, view_class
):
    permission = view_class.permissions[method]
    role = view_class.roles.get(method, "source")
    ours = server_for(orthanc1, name="Ours")
    grant(ours, member.active_group, **{role: True})
    theirs = server_for(orthanc1, name="Theirs", ae_title="THEIRS")
    grant(theirs, GroupFactory(name="Other group"), **{role: True})
    _, token = Token.objects.create_token(member)
    study = orthanc1_studies[0]

    response = _call(client, method, _url(pattern, ours.ae_title, study), None)
    assert response.status_code == 401

    response = _call(client, method, _url(pattern, ours.ae_title, study), token)
    assert response.status_code == 403
    assert permission in response.json()["detail"]

    give_permissions(member, *permission.split("."))
    if permission == RETRIEVE:  # and without a pseudonym the data as it is
        give_permissions(member, *RETRIEVE_UNPSEUDONYMIZED.split("."))
    response = _call(client, method, _url(pattern, theirs.ae_title, study), token)
    assert response.status_code == 404
    assert "THEIRS" in response.json()["detail"]

    response = _call(client, method, _url(pattern, ours.ae_title, study), token)
    try:
        assert response.status_code not in (401, 403, 404), response.content
    finally:
        response.close()  # a retrieval's fetch and scratch folder end with its response


def test_a_server_of_any_of_the_users_groups_is_reachable(client, member, orthanc1):
    """A script chooses no active group: the access of every group of the user counts."""
    from django.contrib.auth.models import Permission

    other_group = member.groups.exclude(pk=member.active_group.pk).get()
    server = server_for(orthanc1)
    grant(server, other_group, source=True)
    other_group.permissions.add(
        Permission.objects.get(content_type__app_label="dicom_web", codename="can_query")
    )
    _, token = Token.objects.create_token(member)

    response = client.get(
        f"/api/dicom-web/{server.ae_title}/studies", headers={"Authorization": f"Token {token}"}
    )

    assert response.status_code == 200


def test_in_maintenance_mode_the_api_answers_503(client, member, orthanc1):
    from adit.core.models import ProjectSettings

    settings_row = ProjectSettings.get()
    settings_row.maintenance = True
    settings_row.save()
    _, token = Token.objects.create_token(member)

    response = client.get(
        "/api/dicom-web/ORTHANC1/studies", headers={"Authorization": f"Token {token}"}
    )

    assert response.status_code == 503
    assert "maintenance" in response.json()["detail"]


def test_a_permission_of_one_group_never_combines_with_the_servers_of_another(
    client, member, orthanc1
):
    """alice's active group may query but reaches no server; her other group reaches the
    server but may not query: neither group may do both, so nothing is found."""
    other_group = member.groups.exclude(pk=member.active_group.pk).get()
    server = server_for(orthanc1)
    grant(server, other_group, source=True)
    give_permissions(member, "dicom_web", "can_query")  # the active group's
    _, token = Token.objects.create_token(member)

    response = client.get(
        f"/api/dicom-web/{server.ae_title}/studies", headers={"Authorization": f"Token {token}"}
    )

    assert response.status_code == 404
