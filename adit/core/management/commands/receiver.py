from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from adit.core.dicom.receiver import Receiver


class Command(BaseCommand):
    help = (
        "Runs the DICOM receiver: the C-STORE SCP that PACS send C-MOVE results to, and the file "
        "channel that hands each instance to the worker that asked for it. Stops on SIGTERM."
    )

    def handle(self, *args, **options):
        receiver = Receiver(
            settings.RECEIVER_AE_TITLE,
            settings.RECEIVER_PORT,
            settings.FILE_CHANNEL_PORT,
            store_host=settings.RECEIVER_HOST,
            channel_host=settings.FILE_CHANNEL_HOST,
        )
        try:
            receiver.start()
        except OSError as err:
            raise CommandError(f"The receiver cannot start: {err}") from err
        self.stdout.write(
            f"Receiver {receiver.ae_title} listening for C-STORE on port "
            f"{receiver.store_address[1]}; file channel on port {receiver.channel_address[1]}"
        )
        # Whoever started us (the supervisor, a test) may wait for this line on a pipe.
        self.stdout.flush()
        receiver.serve_forever()
        self.stdout.write("Receiver stopped.")
