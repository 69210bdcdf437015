from django.core.management.base import BaseCommand

from adit.core.jobs.processing import clean_up_stuck_tasks


class Command(BaseCommand):
    help = (
        'Ends tasks stuck "In Progress" that no worker runs any more and settles jobs stuck '
        '"Canceling". Workers also do this every minute.'
    )

    def handle(self, *args, **options):
        done = clean_up_stuck_tasks()
        for line in done:
            self.stdout.write(line)
        self.stdout.write(f"{len(done)} stuck task(s) or job(s) cleaned up.")
