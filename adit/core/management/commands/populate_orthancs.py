from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from adit.core.demo.orthanc import OrthancClient, OrthancError
from adit.core.demo.synthetic import describe_studies, generate_studies


class Command(BaseCommand):
    help = (
        "Uploads the synthetic demo studies into ORTHANC1. Instances already there are left as "
        "they are, so running it twice stores nothing new. --reset empties ORTHANC1 and ORTHANC2 "
        "first."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Delete everything stored in ORTHANC1 and ORTHANC2 before uploading.",
        )

    def handle(self, *args, reset: bool, **options):
        orthanc1 = OrthancClient(settings.ORTHANC1_URL, name="ORTHANC1")
        orthanc2 = OrthancClient(settings.ORTHANC2_URL, name="ORTHANC2")
        try:
            if reset:
                for orthanc in (orthanc1, orthanc2):
                    orthanc.clear()
                    self.stdout.write(f"Emptied {orthanc.name} at {orthanc.url}.")
            summary = orthanc1.upload(generate_studies())
        except OrthancError as error:
            raise CommandError(
                f"{error}. Are the demo Orthancs running? Their addresses come from the settings "
                "ORTHANC1_URL and ORTHANC2_URL."
            ) from error
        studies = len(describe_studies())
        self.stdout.write(
            self.style.SUCCESS(
                f"ORTHANC1 at {orthanc1.url} holds the {studies} demo studies: "
                f"{summary.stored} instance(s) stored now, {summary.already_stored} were "
                "already there."
            )
        )
