"""The e-mail staff get when a folder destination runs full."""

from __future__ import annotations

from django.core.mail import mail_admins


def send_low_disk_space_mail(lines: list[str]) -> None:
    mail_admins(
        "Warning, low disk space!",
        "These DICOM folders grew past their warn size:\n\n" + "\n".join(lines),
        fail_silently=True,
    )
