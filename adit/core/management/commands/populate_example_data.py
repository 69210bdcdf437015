from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Q

from adit.accounts.models import User
from adit.core.models import DicomFolder, DicomNode, DicomNodeGroupAccess, DicomServer, Project

EXAMPLE_GROUPS = ("Thoraxklinik", "Neuroradiologie", "Studienzentrum")
# Everybody may search, explore, transfer pseudonymized, download and run batch jobs; only the
# neuroradiology group may transfer unpseudonymized, only the thorax clinic urgently; a study
# center runs long-lived scripts against the API.
_EVERYBODY = (
    "selective_transfer.add_selectivetransferjob",
    "selective_transfer.view_selectivetransferjob",
    "selective_transfer.can_download_study",
    "batch_query.add_batchqueryjob",
    "batch_query.view_batchqueryjob",
    "batch_transfer.add_batchtransferjob",
    "batch_transfer.view_batchtransferjob",
    "dicom_explorer.query_dicom_server",
    "dicom_web.can_query",
    "dicom_web.can_retrieve",
    "upload.can_upload_data",
)
GROUP_PERMISSIONS = {
    "Thoraxklinik": (
        *_EVERYBODY,
        "selective_transfer.can_process_urgently",
        "batch_query.can_process_urgently",
        "batch_transfer.can_process_urgently",
    ),
    "Neuroradiologie": (
        *_EVERYBODY,
        "selective_transfer.can_transfer_unpseudonymized",
        "batch_transfer.can_transfer_unpseudonymized",
    ),
    "Studienzentrum": (*_EVERYBODY, "token_authentication.can_generate_never_expiring_token"),
}
# (username, first name, last name, groups); the first group is the active one.
EXAMPLE_USERS = (
    ("alice", "Alice", "Adler", ("Thoraxklinik", "Studienzentrum")),
    ("bob", "Bob", "Berger", ("Neuroradiologie",)),
)
DEMO_PASSWORD = "adit-demo"


class Command(BaseCommand):
    help = (
        "Creates example groups, users (password 'adit-demo') and the demo nodes: ORTHANC1 "
        "(source and destination), ORTHANC2 (destination) and a Downloads folder, and puts the "
        "superuser (SUPERUSER_USERNAME) into the example groups if it is in no group. Only what "
        "is missing is created: what staff changed stays as they left it. For trying ADIT out; "
        "refused in production."
    )

    def handle(self, *args, **options):
        if settings.SETTINGS_MODULE.endswith("production"):
            raise CommandError("Example data with known passwords is not for production.")
        with transaction.atomic():
            groups = self._create_groups()
            self._create_users(groups)
            self._create_nodes(groups)
            self._add_superuser(groups)
        self.stdout.write(
            f"Example users {', '.join(user[0] for user in EXAMPLE_USERS)} "
            f"(password '{DEMO_PASSWORD}') and the demo nodes are ready."
        )

    @staticmethod
    def _create_groups() -> dict[str, Group]:
        groups = {}
        for name in EXAMPLE_GROUPS:
            groups[name], created = Group.objects.get_or_create(name=name)
            if created:
                groups[name].permissions.add(*_permissions(GROUP_PERMISSIONS[name]))
        project, created = Project.objects.get_or_create(
            name="Demo study", defaults={"description": "Pseudonyms stable across its jobs."}
        )
        if created:
            project.groups.add(*groups.values())
        return groups

    @staticmethod
    def _create_users(groups: dict[str, Group]) -> None:
        for username, first_name, last_name, group_names in EXAMPLE_USERS:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={
                    "first_name": first_name,
                    "last_name": last_name,
                    "email": f"{username}@example.org",
                    "active_group": groups[group_names[0]],
                },
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save(update_fields=["password"])
                user.groups.add(*(groups[name] for name in group_names))

    def _add_superuser(self, groups: dict[str, Group]) -> None:
        """Lets the superuser of `cli up` see the demo nodes, unless staff gave it groups."""
        username = settings.SUPERUSER_USERNAME
        superuser = User.objects.filter(username=username, is_superuser=True).first()
        if not username or superuser is None or superuser.groups.exists():
            return
        superuser.groups.add(*groups.values())
        superuser.active_group = groups[EXAMPLE_GROUPS[0]]
        superuser.save(update_fields=["active_group"])
        self.stdout.write(
            f"Superuser '{username}' joined the example groups (active: {EXAMPLE_GROUPS[0]}), "
            "so it sees the demo nodes."
        )

    def _create_nodes(self, groups: dict[str, Group]) -> None:
        orthanc1 = self._demo_server(
            "ORTHANC1", settings.ORTHANC1_URL, settings.ORTHANC1_DICOM_PORT
        )
        orthanc2 = self._demo_server(
            "ORTHANC2", settings.ORTHANC2_URL, settings.ORTHANC2_DICOM_PORT
        )
        downloads = None
        if not DicomNode.objects.filter(name="Downloads").exists():
            downloads = DicomFolder.objects.create(
                name="Downloads", path=str(settings.DATA_DIR / "downloads")
            )
        # Only a node created now gets its accesses: on an older one they are staff's to set.
        for group in groups.values():
            self._grant(orthanc1, group, source=True, destination=True)
            self._grant(orthanc2, group, source=False, destination=True)
            self._grant(downloads, group, source=False, destination=True)

    @staticmethod
    def _demo_server(ae_title: str, rest_url: str, dicom_port: int) -> DicomServer | None:
        """Creates the demo server unless one has its AE title or name (staff may rename it)."""
        name = ae_title.title().replace("Orthanc", "Orthanc ")
        if (
            DicomServer.objects.filter(ae_title=ae_title).exists()
            or DicomNode.objects.filter(name=name).exists()
        ):
            return None
        return DicomServer.objects.create(
            ae_title=ae_title,
            name=name,
            host=urlsplit(rest_url).hostname or "127.0.0.1",
            port=dicom_port,
            patient_root_find_support=True,
            patient_root_get_support=True,
            patient_root_move_support=True,
            study_root_find_support=True,
            study_root_get_support=True,
            study_root_move_support=True,
            store_scp_support=True,
            dicomweb_root_url=rest_url.rstrip("/") + "/dicom-web",
            dicomweb_qido_support=True,
            dicomweb_wado_support=True,
            dicomweb_stow_support=True,
        )

    @staticmethod
    def _grant(node: DicomNode | None, group: Group, source: bool, destination: bool) -> None:
        if node is not None:
            DicomNodeGroupAccess.objects.create(
                dicom_node=node, group=group, source=source, destination=destination
            )


def _permissions(names: tuple[str, ...]):
    """The permissions named as in ``has_perm`` ('app_label.codename')."""
    query = Q()
    for name in names:
        app_label, codename = name.split(".")
        query |= Q(content_type__app_label=app_label, codename=codename)
    return Permission.objects.filter(query)
