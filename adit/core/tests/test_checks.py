import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError


def test_default_dicom_settings_pass_the_checks():
    call_command("check")


def test_invalid_ae_title_fails_at_start_up(settings):
    settings.RECEIVER_AE_TITLE = "FAR_TOO_LONG_AE_TITLE"
    with pytest.raises(SystemCheckError, match="RECEIVER_AE_TITLE is not a valid AE title"):
        call_command("check")


def test_receiver_and_file_channel_need_two_ports(settings):
    settings.FILE_CHANNEL_PORT = settings.RECEIVER_PORT
    with pytest.raises(SystemCheckError, match="adit.E002"):
        call_command("check")


def test_public_file_channel_address_is_warned_about(settings, capsys):
    settings.FILE_CHANNEL_HOST = "8.8.8.8"
    call_command("check")
    assert "adit.W001" in capsys.readouterr().err


def test_short_file_channel_secret_fails_at_start_up(settings):
    settings.FILE_CHANNEL_SECRET = "hospital"
    with pytest.raises(SystemCheckError, match="FILE_CHANNEL_SECRET has only 8 characters"):
        call_command("check")


def test_a_bad_uid_root_for_pseudonymization_fails_at_start_up(settings):
    settings.PSEUDONYMIZATION_UID_ROOT = "1.2.276.0.12345."
    with pytest.raises(SystemCheckError, match="adit.E004.*PSEUDONYMIZATION_UID_ROOT"):
        call_command("check")


def test_an_organisation_uid_root_passes_the_checks(settings):
    settings.PSEUDONYMIZATION_UID_ROOT = "1.2.276.0.12345"
    call_command("check")
