"""The REST API's shared rules, for every endpoint the router serves: who gets what (a matrix
generated from the routes, so a new endpoint is checked without a new test), lists that cost
the same number of queries whatever their length, the nodes and their queries against a real
Orthanc, and a schema that validates and documents what answers."""

from __future__ import annotations

import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, reverse
from openapi_spec_validator import validate

from adit.core.api.urls import router
from adit.core.jobs import registry
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.factories import (
    DicomFolderFactory,
    give_permissions,
    grant,
    server_for,
    unreachable_server,
)
from adit.token_authentication.models import Token

pytestmark = pytest.mark.django_db


def token_header(user, read_only: bool = False) -> dict[str, str]:
    _, plain = Token.objects.create_token(user, "tests", read_only=read_only)
    return {"HTTP_AUTHORIZATION": f"Token {plain}"}


@pytest.fixture
def other_user(db):
    from adit.accounts.tests.factories import GroupFactory, UserFactory

    return UserFactory(username="bob", groups=[GroupFactory(name="Elsewhere")])


@pytest.fixture
def server(member, orthanc1):
    """ORTHANC1, a source of alice's group, which may also query it."""
    server = server_for(orthanc1)
    grant(server, member.active_group, source=True)
    give_permissions(member, "dicom_web", "can_query")
    return server


@pytest.fixture
def jobs(member, server) -> dict[str, int]:
    """A job of alice's of every kind with an API, by endpoint name."""
    made = {}
    for kind in registry.all_kinds():
        if kind.api is not None:
            made[kind.api.name] = kind.job_model.objects.create(owner=member).pk
    return made


def routes() -> list[tuple[URLPattern, str, str]]:
    """(pattern, method, action) of every endpoint the REST router serves."""
    found = []
    for pattern in router.urls:
        actions = getattr(pattern.callback, "actions", {})
        for method, action in actions.items():
            found.append((pattern, method.upper(), action))
    return found


ROUTES = routes()


def url_of(pattern: URLPattern, jobs: dict[str, int], server) -> str:
    assert pattern.name is not None
    base = next((name for name in jobs if pattern.name.startswith(f"api-{name}-")), "")
    kwargs = {}
    if "<node>" in str(pattern.pattern) or "(?P<node>" in str(pattern.pattern):
        kwargs["node"] = server.ae_title
    elif "(?P<pk>" in str(pattern.pattern):
        kwargs["pk"] = jobs[base]
    url = reverse(pattern.name, kwargs=kwargs)
    if pattern.name == "api-node-series":
        url += "?StudyInstanceUID=1.2.3"  # a series query needs its study
    return url


def call(client, method: str, url: str, headers: dict):
    return getattr(client, method.lower())(url, content_type="application/json", **headers)


@pytest.mark.parametrize(("pattern", "method", "action"), ROUTES, ids=lambda v: str(v))
def test_without_a_valid_token_every_endpoint_is_a_401(
    client, jobs, server, pattern, method, action
):
    url = url_of(pattern, jobs, server)
    assert call(client, method, url, {}).status_code == 401
    response = call(client, method, url, {"HTTP_AUTHORIZATION": "Token " + "0" * 40})
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token. Token does not exist."}


@pytest.mark.parametrize(("pattern", "method", "action"), ROUTES, ids=lambda v: str(v))
def test_a_read_only_token_reads_but_changes_nothing(
    client, member, jobs, server, orthanc1, pattern, method, action
):
    url = url_of(pattern, jobs, server)
    response = call(client, method, url, token_header(member, read_only=True))
    if method == "GET":
        assert response.status_code == 200, response.content
    else:
        assert response.status_code == 403
        assert "read-only" in response.json()["detail"]


@pytest.mark.parametrize(("pattern", "method", "action"), ROUTES, ids=lambda v: str(v))
def test_another_users_jobs_and_another_groups_nodes_are_not_found(
    client, other_user, jobs, server, pattern, method, action
):
    url = url_of(pattern, jobs, server)
    response = call(client, method, url, token_header(other_user))
    if pattern.name == "api-node-list":
        assert response.status_code == 200 and response.json() == []
    elif method == "GET" and action == "list":
        assert response.status_code == 200 and response.json()["count"] == 0
    elif method == "POST" and action == "create":
        assert response.status_code in (400, 403)  # his own job, not alice's: tested per app
    elif action in ("studies", "series"):
        # He may not query at all: the 403 names the permission, whatever the node.
        assert response.status_code == 403
        assert "dicom_web.can_query" in response.json()["detail"]
    else:
        assert response.status_code == 404, response.content


@pytest.mark.parametrize(("pattern", "method", "action"), ROUTES, ids=lambda v: str(v))
def test_the_owner_gets_every_endpoint_and_staff_see_any_job(
    client, member, staff_user, jobs, server, orthanc1, pattern, method, action
):
    url = url_of(pattern, jobs, server)
    response = call(client, method, url, token_header(member))
    if action == "create":
        assert response.status_code in (400, 403)  # an empty body, or no permission
    elif action in ("restart", "verify"):
        assert response.status_code == 403
        assert response.json()["detail"].startswith("Only staff may")
    elif method == "POST":
        # An unverified job can be neither canceled, resumed nor retried: the pages' rule.
        assert response.status_code == 400
        assert "cannot be" in response.json()["detail"]
    else:
        assert response.status_code == 200, response.content
    if "node" not in str(pattern.name) and method == "GET":
        as_staff = call(client, method, url, token_header(staff_user))
        assert as_staff.status_code == 200


def test_a_create_without_the_add_permission_names_it(client, member, jobs):
    for kind in registry.all_kinds():
        if kind.api is None or kind.api.create_serializer is None:
            continue
        response = client.post(f"/api/{kind.api.name}/", {}, **token_header(member))
        model = kind.job_model._meta
        assert response.status_code == 403
        assert f"{model.app_label}.add_{model.model_name}" in response.json()["detail"]


def test_job_list_filters_by_status_and_creation_time(client, member, server):
    done = ExampleJob.objects.create(owner=member, status=JobStatus.SUCCESS)
    ExampleJob.objects.create(owner=member, status=JobStatus.PENDING)
    headers = token_header(member)

    listed = client.get("/api/example-jobs/?status=success", **headers).json()
    assert [job["id"] for job in listed["results"]] == [done.pk]
    assert listed["results"][0]["status"] == "SUCCESS" and listed["results"][0]["finished"]

    tomorrow = client.get("/api/example-jobs/?created_after=2999-01-01", **headers).json()
    assert tomorrow["count"] == 0
    bad = client.get("/api/example-jobs/?status=DONE&created_before=soon", **headers)
    assert bad.status_code == 400
    assert "Unknown status DONE" in bad.json()["status"][0]


def test_a_job_shows_its_tasks_with_their_progress(client, member, server):
    job = ExampleJob.objects.create(owner=member, status=JobStatus.IN_PROGRESS)
    ExampleTask.objects.create(
        job=job,
        source=server,
        destination=server,
        patient_id="P1",
        study_uid="1.2.3",
        status=TaskStatus.SUCCESS,
        progress_done=10,
        progress_total=10,
    )
    ExampleTask.objects.create(
        job=job, source=server, destination=server, patient_id="P2", study_uid="1.2.4"
    )

    detail = client.get(f"/api/example-jobs/{job.pk}/", **token_header(member)).json()

    assert detail["status"] == "IN_PROGRESS"
    assert detail["progress"] == {"processed": 1, "total": 2, "unit": "tasks"}
    first, second = detail["tasks"]
    assert (first["status"], first["source"], first["destination"]) == (
        "SUCCESS",
        "ORTHANC1",
        "ORTHANC1",
    )
    assert first["progress"] == {"done": 10, "total": 10, "unit": "instances"}
    assert (second["patient_id"], second["status"]) == ("P2", "PENDING")


def test_a_pending_job_is_canceled_with_the_pages_message(client, member, server):
    job = ExampleJob.objects.create(owner=member, status=JobStatus.PENDING)
    ExampleTask.objects.create(
        job=job, source=server, destination=server, patient_id="P1", study_uid="1.2.3"
    )

    response = client.post(f"/api/example-jobs/{job.pk}/cancel/", **token_header(member))

    assert response.status_code == 200
    assert response.json()["detail"] == f"Job with ID {job.pk} was canceled"
    assert response.json()["job"]["status"] == "CANCELED"
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED


def test_lists_cost_the_same_queries_however_long(client, member, server):
    headers = token_header(member)

    def queries_for_list() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/api/example-jobs/", **headers).status_code == 200
            assert client.get("/api/nodes/", **headers).status_code == 200
        return len(captured)

    def add_jobs(count: int) -> None:
        for _ in range(count):
            job = ExampleJob.objects.create(owner=member)
            for number in range(3):
                ExampleTask.objects.create(
                    job=job, source=server, destination=server, study_uid=f"1.2.{number}"
                )
            folder = DicomFolderFactory()
            grant(folder, member.active_group, destination=True)

    add_jobs(1)
    queries_for_list()  # the first request of a test fills caches (content types, permissions)
    few = queries_for_list()
    add_jobs(5)
    assert queries_for_list() == few
    assert few <= 14, "pinned: the token, the user, two pages with their counts and nodes"


def test_nodes_list_roles_and_capabilities_and_are_named_either_way(
    client, member, server, orthanc1
):
    folder = DicomFolderFactory(name="Exports")
    grant(folder, member.active_group, destination=True)
    server.accesses.filter(group=member.active_group).update(destination=True)
    headers = token_header(member)

    nodes = {node["name"]: node for node in client.get("/api/nodes/", **headers).json()}

    assert nodes["ORTHANC1"]["roles"] == ["source", "destination"]
    assert nodes["ORTHANC1"]["capabilities"] == ["query", "retrieve", "store"]
    assert nodes["Exports"] == {
        "id": folder.pk,
        "name": "Exports",
        "type": "folder",
        "ae_title": None,
        "roles": ["destination"],
        "capabilities": ["store"],
    }
    by_name = client.get("/api/nodes/Exports/", **headers)
    by_ae_title = client.get(f"/api/nodes/{server.ae_title}/", **headers)
    assert by_name.json()["id"] == folder.pk and by_ae_title.json()["id"] == server.pk
    assert client.get("/api/nodes/Nowhere/", **headers).status_code == 404


def test_a_study_query_answers_what_the_pacs_holds(client, member, server, orthanc1_studies):
    study = orthanc1_studies[0]
    headers = token_header(member)

    response = client.get(f"/api/nodes/ORTHANC1/studies/?PatientID={study.patient_id}", **headers)

    answers = response.json()
    expected = {s.study_instance_uid for s in orthanc1_studies if s.patient_id == study.patient_id}
    assert {answer["StudyInstanceUID"] for answer in answers["results"]} == expected
    assert answers["more"] is False
    series = client.get(
        f"/api/nodes/ORTHANC1/series/?StudyInstanceUID={study.study_instance_uid}", **headers
    ).json()
    assert {answer["SeriesInstanceUID"] for answer in series["results"]} == {
        series.series_instance_uid for series in study.series
    }


def test_a_limited_query_says_there_is_more(client, member, server, orthanc1_studies):
    answers = client.get("/api/nodes/ORTHANC1/studies/?limit=2", **token_header(member)).json()
    assert answers["count"] == 2 and answers["more"] is True


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("Colour=blue", "Colour"),
        ("StudyDate=yesterday", "StudyDate"),
        ("limit=0", "limit"),
        ("StudyInstanceUID=1.2.x", "1.2.x"),
    ],
)
def test_a_malformed_query_is_a_400_naming_it(client, member, server, query, named):
    response = client.get(f"/api/nodes/ORTHANC1/studies/?{query}", **token_header(member))
    assert response.status_code == 400
    assert named in str(response.json())


def test_querying_a_server_needs_the_query_permission(client, other_user, orthanc1):
    server = server_for(orthanc1)
    grant(server, other_user.active_group, source=True)

    response = client.get("/api/nodes/ORTHANC1/studies/", **token_header(other_user))

    assert response.status_code == 403
    assert "dicom_web.can_query" in response.json()["detail"]
    # The node itself is listed: it is the group's source.
    assert client.get("/api/nodes/", **token_header(other_user)).json()[0]["name"] == "ORTHANC1"


@pytest.mark.parametrize(
    "query", ["created_after=2024-02-30", "created_before=2024-01-01T25:00", "status=%00"]
)
def test_an_impossible_filter_is_a_400(client, member, server, query):
    response = client.get(f"/api/example-jobs/?{query}", **token_header(member))
    assert response.status_code == 400


@pytest.mark.parametrize("node", ["%00", "x%01y"])
def test_a_node_name_with_control_characters_is_not_found(client, member, server, node):
    assert client.get(f"/api/nodes/{node}/", **token_header(member)).status_code == 404


def test_a_series_query_needs_its_study(client, member, server):
    response = client.get("/api/nodes/ORTHANC1/series/?Modality=CT", **token_header(member))
    assert response.status_code == 400
    assert response.json() == {"StudyInstanceUID": ["A series query needs the study's UID."]}


def test_a_pacs_that_cannot_be_reached_is_a_503_with_retry_after(client, member):
    closed = unreachable_server()
    grant(closed, member.active_group, source=True)
    give_permissions(member, "dicom_web", "can_query")

    response = client.get(f"/api/nodes/{closed.ae_title}/studies/", **token_header(member))

    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert "127.0.0.1" in response.json()["detail"]


def test_a_destination_only_node_cannot_be_queried(client, member, orthanc1):
    server = server_for(orthanc1)
    grant(server, member.active_group, destination=True)
    give_permissions(member, "dicom_web", "can_query")
    response = client.get("/api/nodes/ORTHANC1/studies/", **token_header(member))
    assert response.status_code == 404
    assert "you may query" in response.json()["detail"]


def test_the_schema_validates_and_documents_every_route(client, member):
    response = client.get("/api/schema/?format=json", **token_header(member))
    assert response.status_code == 200
    schema = response.json()
    validate(schema)
    documented = set(schema["paths"])
    for pattern, _, _ in ROUTES:
        path = "/api/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", str(pattern.pattern))
        path = path.replace("^", "").replace("$", "").replace("{pk}", "{id}")
        path = path.replace("\\.", ".")
        assert path in documented, path
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_the_docs_page_loads_nothing_from_elsewhere(client, member):
    assert client.get("/api/docs/").status_code in (302, 401, 403)  # not for strangers
    client.force_login(member)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.content.decode())
    assert sources and all(source.startswith("/") for source in sources), sources
    script = next(source for source in sources if "script" in source)
    assert client.get(script)["Content-Type"].startswith("application/javascript")


@pytest.mark.parametrize(
    "path",
    [
        "/api/no-such-thing",
        # A DICOMweb resource ADIT does not serve, as a viewer asks for it.
        "/api/dicom-web/ORTHANC1/studies/1.2.3/series/1.2.4/instances/1.2.5/rendered",
    ],
)
def test_a_path_the_api_does_not_serve_is_a_json_404(client, member, path):
    _, token = Token.objects.create_token(member)

    response = client.get(path, headers={"Authorization": f"Token {token}"})

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert path in response.json()["detail"]
    assert "/api/docs/" in response.json()["detail"]


def test_a_page_that_does_not_exist_is_still_a_page(client, member):
    client.force_login(member)

    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_an_internal_error_of_the_api_is_json(rf):
    from adit.core.api.errors import server_error

    response = server_error(rf.get("/api/jobs/"))

    assert response.status_code == 500
    assert "internal error" in json.loads(response.content)["detail"]
