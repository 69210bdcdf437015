from factory.declarations import Sequence
from factory.django import DjangoModelFactory

from adit.core.models import DicomFolder, DicomNodeGroupAccess, DicomServer


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
