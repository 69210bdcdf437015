"""Start-up checks of the DICOM and pseudonymization settings, so a bad setting fails at once
instead of in the middle of a transfer (run by every manage.py command and `cli up`)."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.core import checks
from django.core.exceptions import ValidationError

from adit.core.validators import validate_ae_title, validate_uid_root

# Anyone who sees a subscription go by can try guesses at the secret offline.
_MIN_SECRET_LENGTH = 32


@checks.register()
def check_dicom_settings(app_configs, **kwargs) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    for name in ("CALLING_AE_TITLE", "RECEIVER_AE_TITLE"):
        try:
            validate_ae_title(getattr(settings, name))
        except ValidationError as err:
            messages.append(
                checks.Error(
                    f"{name} is not a valid AE title: {' '.join(err.messages)}",
                    hint=f"Set {name} in .env to 1-16 printable ASCII characters.",
                    id="adit.E001",
                )
            )
    # Port 0 lets the system pick a free port for each, which never collides.
    if settings.RECEIVER_PORT == settings.FILE_CHANNEL_PORT != 0:
        messages.append(
            checks.Error(
                f"RECEIVER_PORT and FILE_CHANNEL_PORT are both {settings.RECEIVER_PORT}.",
                hint="The receiver needs two ports; give FILE_CHANNEL_PORT another one.",
                id="adit.E002",
            )
        )
    if not _is_internal(settings.FILE_CHANNEL_HOST):
        messages.append(
            checks.Warning(
                f"FILE_CHANNEL_HOST is {settings.FILE_CHANNEL_HOST}, an address outside this "
                "host or private network.",
                hint="The file channel authenticates workers but does not encrypt the instances "
                "it hands them; keep it on loopback or a private network that only ADIT's "
                "hosts reach.",
                id="adit.W001",
            )
        )
    if 0 < len(settings.FILE_CHANNEL_SECRET) < _MIN_SECRET_LENGTH:
        messages.append(
            checks.Error(
                f"FILE_CHANNEL_SECRET has only {len(settings.FILE_CHANNEL_SECRET)} characters.",
                hint=f"Use at least {_MIN_SECRET_LENGTH} random characters, or leave it empty "
                "to derive it from DJANGO_SECRET_KEY.",
                id="adit.E003",
            )
        )
    if settings.PSEUDONYMIZATION_UID_ROOT:
        try:
            validate_uid_root(settings.PSEUDONYMIZATION_UID_ROOT)
        except ValidationError as err:
            messages.append(
                checks.Error(
                    f"PSEUDONYMIZATION_UID_ROOT is not usable: {' '.join(err.messages)}",
                    hint="Set it to your organisation's registered UID root, or leave it empty "
                    "to generate UIDs under 2.25 (UUID-derived, PS3.5 B.2).",
                    id="adit.E004",
                )
            )
    return messages


def _is_internal(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True  # a host name: its address is the operator's business
    return address.is_loopback or address.is_private
