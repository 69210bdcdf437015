"""The explorer's pages against a real Orthanc, reached over DIMSE and over DICOMweb: what a
person sees at each level, where a search leads, and every error in words."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from django.urls import reverse

from adit.accounts.tests.factories import GroupFactory, UserFactory
from adit.core.models import DicomServer
from adit.core.tests.factories import grant, unreachable_server

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _page(response) -> str:
    return response.content.decode()


def _url(name: str, *args) -> str:
    return reverse(f"dicom_explorer:{name}", args=args)


def test_without_the_permission_the_page_says_which_one_is_missing(client, member):
    client.force_login(member)
    response = client.get(_url("search"))
    assert response.status_code == 403
    assert "dicom_explorer.query_dicom_server" in _page(response)


def test_the_search_leads_to_the_page_of_what_it_names(logged_in, pacs, orthanc1_studies):
    study = orthanc1_studies[0]
    search = _url("search")
    response = logged_in.get(search, {"server": pacs.pk})
    assert response["Location"] == _url("server_detail", pacs.pk)
    response = logged_in.get(search, {"server": pacs.pk, "patient_id": study.patient_id})
    assert response["Location"] == _url("patient_detail", pacs.pk, study.patient_id)
    response = logged_in.get(
        search, {"server": pacs.pk, "accession_number": study.accession_number}
    )
    assert response["Location"] == (
        f"{_url('study_list', pacs.pk)}?AccessionNumber={study.accession_number}"
    )
    page = _page(logged_in.get(response["Location"]))
    assert page.count('data-testid="study-row"') == 1
    assert study.study_instance_uid in page


def test_patient_study_and_series_pages(logged_in, pacs, orthanc1_studies):
    study = orthanc1_studies[1]
    studies_of_patient = [s for s in orthanc1_studies if s.patient_id == study.patient_id]

    patient = _page(logged_in.get(_url("patient_detail", pacs.pk, study.patient_id)))
    assert patient.count('data-testid="study-row"') == len(studies_of_patient)
    family = study.patient_name.split("^")[0]
    assert family in patient

    detail = _page(logged_in.get(_url("study_detail", pacs.pk, study.study_instance_uid)))
    assert detail.count('data-testid="series-row"') == len(study.series)
    assert study.study_description in detail

    series = study.series[0]
    page = _page(
        logged_in.get(
            _url("series_detail", pacs.pk, study.study_instance_uid, series.series_instance_uid)
        )
    )
    assert page.count('data-testid="instance-row"') == series.instance_count
    assert series.series_instance_uid in page

    listed = _page(logged_in.get(_url("series_list", pacs.pk, study.study_instance_uid)))
    assert listed.count('data-testid="series-row"') == len(study.series)
    only = logged_in.get(_url("series_list", pacs.pk, study.study_instance_uid), {"Modality": "SR"})
    sr_count = sum(1 for s in study.series if s.modality == "SR")
    assert _page(only).count('data-testid="series-row"') == sr_count

    patients = _page(logged_in.get(_url("patient_list", pacs.pk), {"PatientID": study.patient_id}))
    assert patients.count('data-testid="patient-row"') == 1


@pytest.mark.parametrize(
    ("name", "args", "query", "message"),
    [
        ("study_list", (), {"Colour": "blue"}, "Colour"),
        ("study_list", (), {"StudyDate": "2024"}, "StudyDate"),
        ("patient_detail", ("*",), {}, "Invalid Patient ID"),
        ("study_detail", ("1.2.x",), {}, "Invalid Study Instance UID"),
    ],
)
def test_a_malformed_question_is_a_400_naming_it(logged_in, pacs, name, args, query, message):
    response = logged_in.get(_url(name, pacs.pk, *args), query)
    assert response.status_code == 400
    assert message in _page(response)


def test_what_the_pacs_does_not_hold_is_said_in_upstreams_words(logged_in, pacs):
    response = logged_in.get(_url("patient_detail", pacs.pk, "NOBODY-0000"))
    assert response.status_code == 404
    assert "No patient found with Patient ID NOBODY-0000." in _page(response)
    response = logged_in.get(_url("study_detail", pacs.pk, "1.2.3.4.5"))
    assert "No study found with Study Instance UID 1.2.3.4.5." in _page(response)


def test_a_server_of_another_group_is_an_invalid_server(logged_in, orthanc1):
    from adit.core.tests.factories import server_for

    foreign = server_for(orthanc1, name="Someone else's")
    grant(foreign, GroupFactory(name="Other"), source=True)
    UserFactory(username="bob")
    for name in ("server_detail", "patient_list", "study_list"):
        response = logged_in.get(_url(name, foreign.pk))
        assert response.status_code == 404
        assert "Invalid DICOM server." in _page(response)


@pytest.fixture
def silent_pacs(explorer_user) -> Iterator[DicomServer]:
    """A server that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    server = DicomServer.objects.create(
        name="Silent",
        ae_title="SILENT",
        host="127.0.0.1",
        port=listener.getsockname()[1],
        study_root_find_support=True,
    )
    grant(server, explorer_user.active_group, source=True)
    yield server
    listener.close()
    for connection in accepted:
        connection.close()


def test_a_pacs_that_never_answers_times_out_with_a_clear_message(logged_in, silent_pacs, settings):
    settings.DICOM_EXPLORER_TIMEOUT = 1
    started = time.monotonic()
    response = logged_in.get(_url("study_list", silent_pacs.pk))
    assert response.status_code == 504
    assert "Connection to server timed out. Please try again later." in _page(response)
    # No retries on top: the page is back within a few timeouts, not minutes.
    assert time.monotonic() - started < 10


def test_a_refused_connection_names_host_and_port(logged_in, explorer_user):
    closed = unreachable_server("Closed PACS")
    grant(closed, explorer_user.active_group, source=True)
    response = logged_in.get(_url("study_list", closed.pk))
    assert response.status_code == 502
    page = _page(response)
    assert "127.0.0.1:1" in page and "connection refused" in page


def test_a_study_page_links_to_its_transfer_prefilled(
    logged_in, explorer_user, pacs, orthanc1_studies
):
    from adit.core.tests.factories import give_permissions

    study = orthanc1_studies[0]
    url = _url("study_detail", pacs.pk, study.study_instance_uid)
    assert 'data-testid="transfer-link"' not in _page(logged_in.get(url))

    give_permissions(explorer_user, "selective_transfer", "add_selectivetransferjob")
    page = _page(logged_in.get(url))
    link = page.split('data-testid="transfer-link"')[0].rsplit('href="', 1)[1].split('"')[0]
    link = link.replace("&amp;", "&")
    assert link.startswith(reverse("selective_transfer:job_create"))
    form = _page(logged_in.get(link))
    assert f'value="{study.patient_id}"' in form
    assert f'value="{study.accession_number}"' in form
    assert f'<option value="{pacs.pk}"\n' in form or f'value="{pacs.pk}" selected' in form


def test_a_series_page_previews_its_middle_image_or_says_why_not(logged_in, pacs, orthanc1_studies):
    import base64
    import io

    from PIL import Image

    study = next(s for s in orthanc1_studies if any(x.modality == "SR" for x in s.series))
    ct = next(s for s in study.series if s.modality == "CT")
    sr = next(s for s in study.series if s.modality == "SR")
    uid = study.study_instance_uid

    page = _page(logged_in.get(_url("series_detail", pacs.pk, uid, ct.series_instance_uid)))
    assert _url("series_preview", pacs.pk, uid, ct.series_instance_uid) in page
    fragment = _page(logged_in.get(_url("series_preview", pacs.pk, uid, ct.series_instance_uid)))
    source = fragment.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    image = Image.open(io.BytesIO(base64.b64decode(source)))
    assert image.format == "PNG" and max(image.size) <= 512
    low, high = image.convert("L").getextrema()
    assert isinstance(low, int) and isinstance(high, int)
    assert high - low > 50, "a real image, not a blank"

    sr_page = _page(logged_in.get(_url("series_detail", pacs.pk, uid, sr.series_instance_uid)))
    assert "A structured report (SR) has no image to preview." in sr_page
    assert "series_preview" not in sr_page and "/preview/" not in sr_page


def test_an_instance_page_lists_its_attributes_and_hides_what_may_identify(
    logged_in, explorer_user, pacs, orthanc1_studies
):
    from adit.core.tests.factories import give_permissions

    study = orthanc1_studies[0]
    series = next(s for s in study.series if s.modality == "CT")
    sop_uid = series.sop_instance_uids[0]
    url = _url("instance_detail", pacs.pk, study.study_instance_uid, series.series_instance_uid,
               sop_uid)  # fmt: skip
    family = study.patient_name.split("^")[0]

    page = _page(logged_in.get(url))
    assert "(7FE0,0010)" in page and " bytes" in page  # the pixels by their size
    assert sop_uid in page and "Modality" in page
    assert family not in page and study.patient_id not in page.split("attribute-table")[1]
    assert "(hidden: may identify the patient)" in page

    give_permissions(explorer_user, "selective_transfer", "can_transfer_unpseudonymized")
    page = _page(logged_in.get(url))
    assert family in page and "hidden" not in page.split("attribute-table")[1]


@pytest.fixture
def odd_pacs(explorer_user, empty_orthanc2) -> DicomServer:
    """A PACS holding a patient whose ID has a slash, as some hospitals write them."""
    from adit.core.demo.synthetic import generate_studies
    from adit.core.tests.factories import server_for

    instances = []
    for dataset in generate_studies(seed=5, patients=1):
        dataset.PatientID = "12/34"
        instances.append(dataset)
        if len(instances) == 2:
            break
    empty_orthanc2.upload(instances)
    server = server_for(empty_orthanc2, name="Odd PACS")
    grant(server, explorer_user.active_group, source=True)
    return server


def test_a_patient_id_with_a_slash_gets_its_pages(logged_in, odd_pacs):
    search = logged_in.get(_url("search"), {"server": odd_pacs.pk, "patient_id": "12/34"})
    assert search["Location"] == _url("patient_detail", odd_pacs.pk, "12/34")
    page = _page(logged_in.get(search["Location"]))
    assert page.count('data-testid="study-row"') == 1
    studies = _page(logged_in.get(_url("study_list", odd_pacs.pk)))
    assert f'href="{_url("patient_detail", odd_pacs.pk, "12/34")}"' in studies
    for dots in (".", ".."):
        response = logged_in.get(_url("search"), {"server": odd_pacs.pk, "patient_id": dots})
        assert "patients" not in response["Location"]  # no path a browser would change


def test_an_instance_or_preview_of_a_malformed_or_unknown_uid_is_said(
    logged_in, pacs, orthanc1_studies
):
    study = orthanc1_studies[0]
    series = study.series[0].series_instance_uid
    uid = study.study_instance_uid
    for bad in ("1.2.x", "1.2.3%3F"):
        response = logged_in.get(_url("instance_detail", pacs.pk, uid, bad, "1.2.3"))
        assert response.status_code == 400
        assert "Invalid Series Instance UID" in _page(response)
        preview = _page(logged_in.get(_url("series_preview", pacs.pk, uid, bad)))
        assert "No preview: Invalid Series Instance UID" in preview
    response = logged_in.get(_url("instance_detail", pacs.pk, uid, series, "1.2.3.4.5.6"))
    assert response.status_code == 404
    assert "No instance found with SOP Instance UID 1.2.3.4.5.6." in _page(response)


def test_a_study_page_downloads_the_study_pseudonymized(
    logged_in, explorer_user, pacs, orthanc1_studies
):
    import html
    import io
    import zipfile

    from adit.core.tests.factories import give_permissions

    study = orthanc1_studies[0]
    url = _url("study_detail", pacs.pk, study.study_instance_uid)
    assert 'data-testid="download-form"' not in _page(logged_in.get(url))
    give_permissions(explorer_user, "selective_transfer", "can_download_study")
    page = _page(logged_in.get(url))
    form = page.split('data-testid="download-form"', 1)[1].split("</form>", 1)[0]
    row = html.unescape(form.split('name="study" value="', 1)[1].split('"', 1)[0])

    response = logged_in.post(
        reverse("selective_transfer:download_study"), {"study": row, "pseudonym": "EXP-001"}
    )
    assert response.status_code == 200, _page(response)[-500:]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))  # pyright: ignore[reportAttributeAccessIssue]
    names = archive.namelist()
    assert names and all(name.startswith("EXP-001/") for name in names)


def test_a_transfer_task_page_links_to_its_study_in_the_explorer(
    client, explorer_user, pacs, orthanc1_studies
):
    # The core's test-only transfer app: its task page is every transfer app's.
    from adit.core.tests.example_app.models import ExampleJob, ExampleTask
    from adit.core.tests.job_pages import url

    study = orthanc1_studies[0]
    job = ExampleJob.objects.create(owner=explorer_user)
    task = ExampleTask.objects.create(
        job=job,
        source=pacs,
        destination=pacs,
        patient_id=study.patient_id,
        study_uid=study.study_instance_uid,
    )
    client.force_login(explorer_user)
    page = _page(client.get(url("task_detail", task)))
    link = _url("study_detail", pacs.pk, study.study_instance_uid)
    assert f'href="{link}"' in page and "Open in the DICOM explorer" in page

    explorer_user.groups.clear()  # no explorer permission, no source access: no link
    other = GroupFactory(name="Elsewhere")
    explorer_user.groups.add(other)
    explorer_user.active_group = other
    explorer_user.save()
    page = _page(client.get(url("task_detail", task)))
    assert "Open in the DICOM explorer" not in page


def test_a_group_without_a_source_is_told_before_searching(logged_in):
    page = _page(logged_in.get(_url("search")))
    assert 'data-testid="setup-problem"' in page
    assert "may fetch from no DICOM server" in page
