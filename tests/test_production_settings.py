"""The production settings with the .env that 'cli init-workspace' writes, as an operator gets
them: Django's deployment check has nothing to report, and a forwarded scheme is trusted only
when ADIT is declared to sit behind a TLS proxy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adit.env import BASE_DIR

CLI = Path(sys.executable).parent / "cli"
SHOW_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
names = ["SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT",
         "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER"]
print(json.dumps({name: getattr(settings, name) for name in names}))
"""
# What a browser (or a health check) asking over plain HTTP gets: the status of each request.
ASK_OVER_HTTP = """
import json, django
django.setup()
from django.test import Client
client = Client(raise_request_exception=False, HTTP_HOST="localhost")
print(json.dumps({
    "plain": client.get("/accounts/login/").status_code,
    "claims_https": client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https").status_code,
    "health": client.get("/health/").status_code,
}))
"""


@pytest.fixture
def production_env(tmp_path) -> dict[str, str]:
    """The process environment of a production host whose only configuration is the new .env."""
    documented = {
        line.split("=", 1)[0]
        for line in (BASE_DIR / "example.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    # The root conftest allows sync ORM calls on an event loop, for browser tests only.
    unwanted = documented | {"DJANGO_ALLOW_ASYNC_UNSAFE"}
    environment = {key: value for key, value in os.environ.items() if key not in unwanted}
    environment |= {"ENV_FILE": str(tmp_path / ".env"), "ADIT_DATA_DIR": str(tmp_path / "data")}
    created = subprocess.run(
        [str(CLI), "init-workspace"], cwd=BASE_DIR, env=environment, capture_output=True, text=True
    )
    assert created.returncode == 0, created.stderr
    return environment | {
        "DJANGO_SETTINGS_MODULE": "adit.settings.production",
        # The one value not taken from .env: an empty DATABASE_URL would start the embedded
        # PostgreSQL, which the checks below never connect to.
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
    }


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _run(script: str, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_deploy_check_reports_nothing(production_env):
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=production_env)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout, result.stderr


def test_cookies_are_secure_and_the_forwarded_scheme_is_not_trusted(production_env):
    settings = _run(SHOW_SETTINGS, production_env)

    assert settings["SESSION_COOKIE_SECURE"] and settings["CSRF_COOKIE_SECURE"]
    assert settings["SECURE_SSL_REDIRECT"]
    assert settings["SECURE_HSTS_SECONDS"] >= 300
    assert settings["SECURE_PROXY_SSL_HEADER"] is None


def test_plain_http_is_redirected_even_when_the_client_claims_https(production_env):
    statuses = _run(ASK_OVER_HTTP, production_env)

    assert statuses["plain"] == statuses["claims_https"] == 301
    # The health check is not redirected (its database is unreachable here, hence 503).
    assert statuses["health"] == 503


def test_behind_a_tls_proxy_its_forwarded_scheme_is_trusted(production_env):
    settings = _run(SHOW_SETTINGS, production_env | {"DJANGO_BEHIND_TLS_PROXY": "true"})

    assert settings["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert settings["SESSION_COOKIE_SECURE"]
    statuses = _run(ASK_OVER_HTTP, production_env | {"DJANGO_BEHIND_TLS_PROXY": "true"})
    assert statuses["plain"] == 301
    assert statuses["claims_https"] != 301  # served (here a 500: the database is unreachable)


def test_secure_cookies_stay_when_the_redirect_is_left_to_the_proxy(production_env):
    settings = _run(SHOW_SETTINGS, production_env | {"DJANGO_SECURE_SSL_REDIRECT": "false"})

    assert not settings["SECURE_SSL_REDIRECT"]
    assert settings["SESSION_COOKIE_SECURE"] and settings["CSRF_COOKIE_SECURE"]
