import pytest

from adit.core.encryption import DecryptionError, decrypt, encrypt


def test_text_comes_back_and_is_not_readable_in_between():
    token = encrypt("Ärzte-Passwort 42!")

    assert "Passwort" not in token and token.isascii()
    assert decrypt(token) == "Ärzte-Passwort 42!"
    assert encrypt("Ärzte-Passwort 42!") != token  # a fresh IV each time


def test_another_secret_key_cannot_decrypt(settings):
    token = encrypt("s3cret!")
    settings.SECRET_KEY = "another-secret-key-of-a-misconfigured-worker"

    with pytest.raises(DecryptionError, match="another DJANGO_SECRET_KEY"):
        decrypt(token)


def test_a_rotated_secret_key_still_decrypts_from_the_fallbacks(settings):
    token = encrypt("s3cret!")
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "the-new-secret-key-after-a-rotation"

    assert decrypt(token) == "s3cret!"


def test_an_altered_token_is_refused():
    token = encrypt("s3cret!")
    altered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]

    with pytest.raises(DecryptionError):
        decrypt(altered)
