from django.core.management import call_command
from django.test import override_settings


def test_production_static_collection_resolves_every_reference(tmp_path):
    """The manifest storage of production fails on any file a stylesheet or script names but
    the vendored folder lacks (fonts, source maps)."""
    storages = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    with override_settings(STATIC_ROOT=tmp_path, STORAGES=storages):
        call_command("collectstatic", "--noinput", verbosity=0)
    assert (tmp_path / "staticfiles.json").exists()
    assert list(tmp_path.glob("vendor/bootstrap/bootstrap.min.*.css"))
