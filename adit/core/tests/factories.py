from factory.declarations import Sequence
from factory.django import DjangoModelFactory

from adit.core.jobs.processing import run_task
from adit.core.jobs.statuses import JobStatus
from adit.core.models import DicomFolder, DicomNodeGroupAccess, DicomServer
from adit.core.tests.example_app.models import ExampleJob, ExampleTask


class DicomServerFactory(DjangoModelFactory):
    class Meta:
        model = DicomServer
        django_get_or_create = ("ae_title",)

    name = Sequence(lambda n: f"Server {n}")
    ae_title = Sequence(lambda n: f"AE{n}")
    host = "127.0.0.1"
    port = 11112


class DicomFolderFactory(DjangoModelFactory):
    class Meta:
        model = DicomFolder

    name = Sequence(lambda n: f"Folder {n}")
    path = Sequence(lambda n: f"/tmp/adit-folder-{n}")


def grant(node, group, source=False, destination=False) -> DicomNodeGroupAccess:
    return DicomNodeGroupAccess.objects.create(
        dicom_node=node, group=group, source=source, destination=destination
    )


# How a server that offers each way of fetching is configured (flags over server_for's
# C-FIND + C-GET + C-STORE defaults); "dicomweb" also needs dicomweb_root_url.
SOURCE_KINDS: dict[str, dict] = {
    "c-get": {},
    "c-move": {"study_root_get_support": False, "study_root_move_support": True},
    "dicomweb": {
        "host": "",
        "port": None,
        "study_root_find_support": False,
        "study_root_get_support": False,
        "dicomweb_qido_support": True,
        "dicomweb_wado_support": True,
    },
}


def server_for(orthanc, name: str | None = None, kind: str = "c-get", **flags) -> DicomServer:
    """The DicomServer row of a test Orthanc (created, or updated to these flags)."""
    fields = {
        "name": name or orthanc.ae_title,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "study_root_find_support": True,
        "study_root_get_support": True,
        "store_scp_support": True,
        **SOURCE_KINDS[kind],
        **flags,
    }
    if kind == "dicomweb":
        fields.setdefault("dicomweb_root_url", orthanc.dicomweb_root)
    ae_title = fields.pop("ae_title", orthanc.ae_title)  # another row for the same Orthanc
    server, _ = DicomServer.objects.update_or_create(ae_title=ae_title, defaults=fields)
    return server


def unreachable_server(name: str = "Closed") -> DicomServer:
    """A server on a port nobody listens on: every connection is refused at once."""
    return DicomServer.objects.create(
        name=name,
        ae_title=name.upper()[:16],
        host="127.0.0.1",
        port=1,
        study_root_find_support=True,
        study_root_get_support=True,
    )


def run_transfer(owner, source, destination, patient_id: str, study_uid: str, **options):
    """Creates a one-task transfer job of the example app and runs the task in this process,
    as a worker would; returns the task refreshed (``pseudonym`` and ``series_uids`` go to the
    task, other options to the job)."""
    task_fields = {key: options.pop(key) for key in ("pseudonym", "series_uids") if key in options}
    job = ExampleJob.objects.create(owner=owner, status=JobStatus.PENDING, **options)
    task = ExampleTask.objects.create(
        job=job,
        source=source,
        destination=destination,
        patient_id=patient_id,
        study_uid=study_uid,
        **task_fields,
    )
    run_task(None, task._meta.label_lower, task.pk)
    task.refresh_from_db()
    job.refresh_from_db()
    return task


def xlsx_bytes(*rows) -> bytes:
    """An Excel workbook of these rows on its first sheet, as an uploaded file holds it."""
    import io

    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(list(row))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def give_permissions(user, app_label: str, *codenames: str) -> None:
    """Adds permissions of an app to the user's active group (where ADIT reads them)."""
    from django.contrib.auth.models import Permission

    group = user.active_group
    for codename in codenames:
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    # has_perm caches per user object
    for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        if hasattr(user, cache):
            delattr(user, cache)
