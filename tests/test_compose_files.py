"""Checks of the container setup that need no Docker: the compose files, the Orthanc configs and the
Dockerfile are read as data and held to what the stack relies on.

Only ``test_docker_compose_accepts_file`` needs the ``docker compose`` plugin; it is skipped where
the plugin is missing, the other checks always run.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_FILE = REPO_ROOT / "docker-compose.dev.yml"
PROD_FILE = REPO_ROOT / "docker-compose.prod.yml"
COMPOSE_FILES = {"dev": DEV_FILE, "prod": PROD_FILE}
DOCKERFILE = REPO_ROOT / "Dockerfile"
EXAMPLE_ENV = REPO_ROOT / "example.env"

APP_SERVICES = ("init", "web", "default_worker", "dicom_worker", "receiver")
REQUIRED_SERVICES = ("web", "default_worker", "dicom_worker", "receiver", "postgres")

# Every management command a service may run. 'receiver' and 'create_superuser' are ADIT's own
# and arrive with later changes; the others come from Django, daphne and ADIT's core app.
KNOWN_MANAGEMENT_COMMANDS = {
    "migrate",
    "collectstatic",
    "create_superuser",
    "runserver",
    "worker",
    "receiver",
}

# (service, AE title, DICOM port, HTTP port, config file)
ORTHANCS = [
    ("orthanc1", "ORTHANC1", 7501, 6501, "docker/orthanc1.json"),
    ("orthanc2", "ORTHANC2", 7502, 6502, "docker/orthanc2.json"),
]

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt} and $VAR;
# '$$' is compose's escape for a literal dollar sign and references nothing.
VARIABLE_RE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?[^}]*\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def load(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)  # the safe loader resolves the '<<' merge keys as compose does
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    return data


def services(path: Path) -> dict[str, dict]:
    data = load(path)
    assert isinstance(data.get("services"), dict), f"{path.name} has no services"
    return data["services"]


def command_parts(service: dict) -> list[list[str]]:
    """The command of a service as the argument lists of the programs it runs, in order."""
    command = service.get("command")
    if isinstance(command, list):
        if command[:2] == ["sh", "-c"] and len(command) == 3:
            script = command[2]
        else:
            return [[str(arg) for arg in command]]
    else:
        script = str(command)
    return [shlex.split(part) for part in re.split(r"&&|;", script) if part.strip()]


def published_ports(service: dict) -> list[tuple[str, int]]:
    """(published, container port) pairs; 'published' keeps any ${...} unresolved."""
    pairs = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            pairs.append((str(port.get("published", "")), int(port["target"])))
            continue
        spec = str(port).split("/")[0]
        # The container port follows the last ':' that is not inside ${...}.
        outside = re.sub(r"\$\{[^}]*\}", lambda m: "x" * len(m.group()), spec)
        cut = outside.rfind(":")
        pairs.append((spec[:cut] if cut >= 0 else "", int(spec[cut + 1 :])))
    return pairs


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def documented_variables() -> set[str]:
    assert EXAMPLE_ENV.exists(), f"{EXAMPLE_ENV} is missing; it documents the configuration"
    names = set()
    for line in EXAMPLE_ENV.read_text(encoding="utf-8").splitlines():
        # 'VAR=value' or an optional one left commented out: '# VAR=value'
        match = re.match(r"\s*#?\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if match:
            names.add(match.group(1))
    return names


@pytest.fixture(params=sorted(COMPOSE_FILES), ids=str)
def compose_file(request) -> Path:
    return COMPOSE_FILES[request.param]


def test_compose_files_define_the_stack(compose_file):
    defined = services(compose_file)
    for name in (*REQUIRED_SERVICES, "init"):
        assert name in defined, f"{compose_file.name} lacks the service '{name}'"


def test_app_services_have_an_image_and_a_command(compose_file):
    defined = services(compose_file)
    for name in APP_SERVICES:
        service = defined[name]
        assert service.get("build") or service.get("image"), f"{name}: no build and no image"
        assert service.get("command"), f"{name}: no command"


def test_commands_run_known_programs(compose_file):
    defined = services(compose_file)
    for name in APP_SERVICES:
        for argv in command_parts(defined[name]):
            if argv[:2] == ["python", "manage.py"]:
                assert len(argv) > 2 and argv[2] in KNOWN_MANAGEMENT_COMMANDS, (
                    f"{name}: unknown management command in {argv}"
                )
            else:
                assert argv[:3] == ["python", "-m", "adit.web_server"], f"{name}: unexpected {argv}"


def test_processes_are_the_expected_ones(compose_file):
    defined = services(compose_file)
    init = [argv[2] for argv in command_parts(defined["init"])]
    assert init == ["migrate", "collectstatic", "create_superuser"]
    assert ["--noinput"] == command_parts(defined["init"])[0][3:]
    for worker, queue in (("default_worker", "default"), ("dicom_worker", "dicom")):
        (argv,) = command_parts(defined[worker])
        assert argv == ["python", "manage.py", "worker", "--queue", queue]
    (argv,) = command_parts(defined["receiver"])
    assert argv == ["python", "manage.py", "receiver"]
    (web,) = command_parts(defined["web"])
    if compose_file == PROD_FILE:
        assert web == shlex.split(
            "python -m adit.web_server -b 0.0.0.0 -p 8000 adit.asgi:application"
        )
    else:
        assert web == shlex.split("python manage.py runserver 0.0.0.0:8000")


def test_existing_management_commands_are_real():
    commands = REPO_ROOT / "adit" / "core" / "management" / "commands"
    assert (commands / "worker.py").exists()


def test_web_and_receiver_publish_their_ports(compose_file):
    defined = services(compose_file)
    web_port = "${WEB_HTTP_PORT:-80}" if compose_file == PROD_FILE else "${WEB_DEV_PORT:-8000}"
    assert (web_port, 8000) in published_ports(defined["web"])
    assert ("${RECEIVER_PORT:-11112}", 11112) in published_ports(defined["receiver"])


def test_app_services_share_settings_database_and_data(compose_file):
    defined = services(compose_file)
    module = "production" if compose_file == PROD_FILE else "development"
    for name in APP_SERVICES:
        service = defined[name]
        env = environment(service)
        assert env.get("DJANGO_SETTINGS_MODULE") == f"adit.settings.{module}", name
        assert env.get("ENVIRONMENT") == module, name
        assert env.get("DATABASE_URL", "").startswith("postgres://"), name
        assert "@postgres:5432/adit" in env["DATABASE_URL"], name
        assert env.get("ADIT_DATA_DIR") == "/var/lib/adit", name
        assert service.get("env_file"), f"{name}: no env_file"
        volumes = [str(v).split(":")[1] for v in service.get("volumes", [])]
        assert "/var/lib/adit" in volumes, f"{name}: no data volume"
        deps = depends_on(service)
        assert deps.get("postgres") == "service_healthy", name
        if name != "init":
            assert deps.get("init") == "service_completed_successfully", name
    # The image's web health check would fail in every other service.
    for name in APP_SERVICES:
        if name != "web":
            assert defined[name].get("healthcheck", {}).get("disable") is True, name


def test_postgres(compose_file):
    postgres = services(compose_file)["postgres"]
    assert postgres["image"] == "postgres:17"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert environment(postgres)["POSTGRES_DB"] == "adit"
    assert "POSTGRES_PASSWORD" in environment(postgres)
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


def test_named_volumes_are_declared(compose_file):
    data = load(compose_file)
    declared = set(data.get("volumes") or {})
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume '{source}' is not declared"


def test_dev_mounts_the_source():
    defined = services(DEV_FILE)
    for name in APP_SERVICES:
        assert (".", "/app") in bind_mounts(defined[name]), name


def test_prod_has_no_source_mounts_and_no_orthancs():
    defined = services(PROD_FILE)
    for name, service in defined.items():
        assert not bind_mounts(service), f"{name} mounts host files in production"
    assert not any(name.startswith("orthanc") for name in defined)


def test_prod_restarts_and_scales():
    defined = services(PROD_FILE)
    assert defined["init"]["restart"] == "no"
    for name in ("web", "default_worker", "dicom_worker", "receiver", "postgres"):
        assert defined[name]["restart"] in ("unless-stopped", "always"), name
    assert defined["dicom_worker"]["deploy"]["replicas"] == "${DICOM_WORKER_PROCESSES:-2}"


@pytest.mark.parametrize(("name", "aet", "dicom_port", "http_port", "config"), ORTHANCS)
def test_dev_orthancs(name, aet, dicom_port, http_port, config):
    service = services(DEV_FILE)[name]
    assert str(service["image"]).startswith("orthancteam/orthanc")
    assert (f"./{config}", "/etc/orthanc/orthanc.json") in [
        (source, target) for source, target in bind_mounts(service)
    ]
    ports = published_ports(service)
    assert (str(dicom_port), dicom_port) in ports
    assert (str(http_port), http_port) in ports

    settings = json.loads((REPO_ROOT / config).read_text(encoding="utf-8"))
    assert settings["DicomAet"] == aet
    assert settings["DicomPort"] == dicom_port
    assert settings["HttpPort"] == http_port
    assert settings["DicomWeb"]["Enable"] is True
    assert settings["DicomWeb"]["Root"] == "/dicom-web/"
    assert settings["AuthenticationEnabled"] is False
    assert settings["RemoteAccessAllowed"] is True
    assert settings["DicomCheckCalledAet"] is True
    assert settings["StorageDirectory"] == "/var/lib/orthanc/db"

    # Each Orthanc knows the other one and ADIT's receiver, by compose service name.
    modalities = settings["DicomModalities"]
    assert modalities["ADIT"] == ["ADIT", "receiver", 11112]
    for other, other_aet, other_port, _, _ in ORTHANCS:
        if other != name:
            assert modalities[other_aet] == [other_aet, other, other_port]


def test_compose_variables_have_defaults_or_are_documented():
    documented = documented_variables()
    undocumented = set()
    for path in COMPOSE_FILES.values():
        for match in VARIABLE_RE.finditer(path.read_text(encoding="utf-8")):
            name = match.group("braced") or match.group("bare")
            if not name:
                continue  # '$$'
            has_default = match.group("braced") and match.group("op") in (":-", "-")
            if not has_default and name not in documented:
                undocumented.add(f"{path.name}: {name}")
    assert not undocumented, f"not in example.env and without a default: {sorted(undocumented)}"


def test_dockerfile():
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = re.sub(r"\\\n", " ", text)  # join continued lines
    assert re.search(r"^FROM python:3\.11-slim-bookworm\b", instructions, re.M)
    syncs = re.findall(r"uv sync[^\n&]*", instructions)
    assert len(syncs) == 2, syncs
    assert all("--frozen" in sync and "--no-dev" in sync for sync in syncs)
    assert "--no-install-project" in syncs[0]
    # The lock file is copied before the first sync, the source only after it.
    assert instructions.index("uv.lock") < instructions.index(syncs[0])
    assert instructions.index("COPY . .") > instructions.index(syncs[0])
    assert re.search(r"apt-get install[^\n]*\bdcmtk\b[^\n]*\bp7zip-full\b", instructions)
    assert re.search(r"^EXPOSE .*\b8000\b.*\b11112\b", instructions, re.M)
    user = re.findall(r"^USER (\S+)", instructions, re.M)
    assert user and user[-1] not in ("root", "0"), "the image must not run as root"
    assert re.search(r"^HEALTHCHECK .*localhost:8000/health/", instructions, re.M)
    [command] = re.findall(r"^CMD (.*)$", instructions, re.M)
    assert json.loads(command) == shlex.split(
        "python -m adit.web_server -b 0.0.0.0 -p 8000 adit.asgi:application"
    )


def test_dockerignore_keeps_secrets_and_local_state_out():
    ignored = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for entry in (".env", ".venv", ".adit", ".git", "node_modules"):
        assert entry in ignored, entry


def docker_compose_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        result = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@pytest.mark.skipif(
    not docker_compose_available(), reason="the docker compose plugin is missing on this machine"
)
def test_docker_compose_accepts_file(compose_file, tmp_path):
    # A copy of the setup, so that the .env the files read is example.env, not the developer's.
    for name in ("Dockerfile", DEV_FILE.name, PROD_FILE.name):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "docker", tmp_path / "docker")
    shutil.copy(EXAMPLE_ENV, tmp_path / ".env")
    result = subprocess.run(
        [
            "docker",
            "compose",
            "--env-file",
            str(tmp_path / ".env"),
            "-f",
            str(tmp_path / compose_file.name),
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
