from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from adit.accounts.models import User
from adit.core.models import DicomFolder, DicomNodeGroupAccess, DicomServer, Project

EXAMPLE_GROUPS = ("Thoraxklinik", "Neuroradiologie", "Studienzentrum")
# (username, first name, last name, groups); the first group is the active one.
EXAMPLE_USERS = (
    ("alice", "Alice", "Adler", ("Thoraxklinik", "Studienzentrum")),
    ("bob", "Bob", "Berger", ("Neuroradiologie",)),
)
DEMO_PASSWORD = "adit-demo"


class Command(BaseCommand):
    help = (
        "Creates example groups, users (password 'adit-demo') and the demo nodes: ORTHANC1 "
        "(source and destination), ORTHANC2 (destination) and a Downloads folder. For trying "
        "ADIT out; refused in production."
    )

    def handle(self, *args, **options):
        if settings.SETTINGS_MODULE.endswith("production"):
            raise CommandError("Example data with known passwords is not for production.")
        with transaction.atomic():
            groups = {name: Group.objects.get_or_create(name=name)[0] for name in EXAMPLE_GROUPS}
            self._create_users(groups)
            self._create_nodes(groups)
        self.stdout.write(
            f"Example users {', '.join(user[0] for user in EXAMPLE_USERS)} "
            f"(password '{DEMO_PASSWORD}') and the demo nodes are ready."
        )

    def _create_users(self, groups: dict[str, Group]) -> None:
        for username, first_name, last_name, group_names in EXAMPLE_USERS:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={
                    "first_name": first_name,
                    "last_name": last_name,
                    "email": f"{username}@example.org",
                },
            )
            if created:
                user.set_password(DEMO_PASSWORD)
            user.groups.add(*(groups[name] for name in group_names))
            user.active_group = groups[group_names[0]]
            user.save()
        # A study center runs long-lived scripts against the API.
        permissions = Permission.objects.filter(codename="can_generate_never_expiring_token")
        groups["Studienzentrum"].permissions.add(*permissions)
        # Everybody may search, transfer pseudonymized and download; only the neuroradiology
        # group may transfer unpseudonymized, only the thorax clinic urgently.
        selective = Permission.objects.filter(content_type__app_label="selective_transfer")
        everybody = selective.filter(
            codename__in=[
                "add_selectivetransferjob",
                "view_selectivetransferjob",
                "can_download_study",
            ]
        )
        for group in groups.values():
            group.permissions.add(*everybody)
        groups["Neuroradiologie"].permissions.add(
            *selective.filter(codename="can_transfer_unpseudonymized")
        )
        groups["Thoraxklinik"].permissions.add(*selective.filter(codename="can_process_urgently"))
        project, _ = Project.objects.get_or_create(
            name="Demo study", defaults={"description": "Pseudonyms stable across its jobs."}
        )
        project.groups.add(*groups.values())

    def _create_nodes(self, groups: dict[str, Group]) -> None:
        orthanc1 = self._demo_server(
            "ORTHANC1", settings.ORTHANC1_URL, settings.ORTHANC1_DICOM_PORT
        )
        orthanc2 = self._demo_server(
            "ORTHANC2", settings.ORTHANC2_URL, settings.ORTHANC2_DICOM_PORT
        )
        downloads, _ = DicomFolder.objects.update_or_create(
            name="Downloads", defaults={"path": str(settings.DATA_DIR / "downloads")}
        )
        for group in groups.values():
            self._grant(orthanc1, group, source=True, destination=True)
            self._grant(orthanc2, group, source=False, destination=True)
            self._grant(downloads, group, source=False, destination=True)

    @staticmethod
    def _demo_server(ae_title: str, rest_url: str, dicom_port: int) -> DicomServer:
        host = urlsplit(rest_url).hostname or "127.0.0.1"
        server, _ = DicomServer.objects.update_or_create(
            ae_title=ae_title,
            defaults={
                "name": ae_title.title().replace("Orthanc", "Orthanc "),
                "host": host,
                "port": dicom_port,
                "patient_root_find_support": True,
                "patient_root_get_support": True,
                "patient_root_move_support": True,
                "study_root_find_support": True,
                "study_root_get_support": True,
                "study_root_move_support": True,
                "store_scp_support": True,
                "dicomweb_root_url": rest_url.rstrip("/") + "/dicom-web",
                "dicomweb_qido_support": True,
                "dicomweb_wado_support": True,
                "dicomweb_stow_support": True,
            },
        )
        return server

    @staticmethod
    def _grant(node, group: Group, source: bool, destination: bool) -> None:
        DicomNodeGroupAccess.objects.update_or_create(
            dicom_node=node, group=group, defaults={"source": source, "destination": destination}
        )
