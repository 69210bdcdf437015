"""Encryption of the few secrets ADIT must read back later (unlike passwords of its users, which
are hashed), such as the password of a job's ZIP archives while the job runs.

The key is derived from Django's SECRET_KEY, so a copy of the database alone does not reveal
them; every process that reads them back (web server and workers, also on other hosts) needs
the same DJANGO_SECRET_KEY. Fernet (AES-128-CBC with an HMAC-SHA256) also detects a value that
was tampered with or encrypted under another key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

# Separates this key from every other one derived from SECRET_KEY (sessions, tokens, …).
_KEY_PURPOSE = b"adit.core.encryption: Fernet key"


class DecryptionError(Exception):
    """The value cannot be decrypted: it was encrypted under another secret key, or altered."""


def _fernet() -> MultiFernet:
    # Keys in SECRET_KEY_FALLBACKS still decrypt what was encrypted before a key rotation.
    secret_keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return MultiFernet([Fernet(_derive_key(secret_key)) for secret_key in secret_keys])


def _derive_key(secret_key: str | bytes) -> bytes:
    if isinstance(secret_key, str):
        secret_key = secret_key.encode()
    digest = hmac.new(secret_key, _KEY_PURPOSE, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest)  # 32 bytes, as Fernet wants them


def encrypt(text: str) -> str:
    """The text encrypted, as ASCII (a fresh random IV each time, so equal texts differ)."""
    return _fernet().encrypt(text.encode()).decode("ascii")


def decrypt(token: str) -> str:
    """The text `encrypt` was given.

    Raises:
        DecryptionError: The token was encrypted under another secret key, or altered.
    """
    try:
        return _fernet().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as err:
        raise DecryptionError(
            "It was encrypted under another DJANGO_SECRET_KEY (the web server and every worker "
            "need the same one) or has been altered."
        ) from err
