from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from adit.accounts.models import User


class Command(BaseCommand):
    help = (
        "Creates the superuser from SUPERUSER_USERNAME, SUPERUSER_EMAIL and SUPERUSER_PASSWORD "
        "(and its API token from SUPERUSER_AUTH_TOKEN) unless that user exists already."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Reset the password (and token) of an existing user to the configured ones.",
        )

    def handle(self, *args, force: bool, **options):
        username = settings.SUPERUSER_USERNAME
        if not username:
            self.stdout.write("SUPERUSER_USERNAME is not set; no superuser created.")
            return
        if not settings.SUPERUSER_PASSWORD:
            raise CommandError(
                "SUPERUSER_PASSWORD is empty. Set it in .env (or run 'uv run cli init-workspace "
                "--force' for a new .env with a random one)."
            )
        user = User.objects.filter(username=username).first()
        if user and not force:
            self.stdout.write(f"Superuser '{username}' exists already.")
            return
        if user is None:
            user = User(username=username)
        user.email = settings.SUPERUSER_EMAIL
        user.is_staff = user.is_superuser = True
        user.set_password(settings.SUPERUSER_PASSWORD)
        user.save()
        self.stdout.write(f"Superuser '{username}' is ready.")

        if settings.SUPERUSER_AUTH_TOKEN:
            from adit.token_authentication.models import create_or_replace_named_token

            create_or_replace_named_token(
                user, settings.SUPERUSER_AUTH_TOKEN, "Created from SUPERUSER_AUTH_TOKEN"
            )
            self.stdout.write("Its API token from SUPERUSER_AUTH_TOKEN is ready.")
