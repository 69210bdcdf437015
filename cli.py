"""ADIT's command line: ``uv run cli --help``.

Every command works from a fresh clone: the app runs on an embedded PostgreSQL unless
DATABASE_URL points at a server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from adit.env import BASE_DIR, dicom_worker_processes, env_file, load_env


class _EitherSpellingGroup(TyperGroup):
    """Takes ``copy_statics`` for ``copy-statics`` and the other way round: the original ADIT's
    commands had underscores, this one's have dashes.

    Only the lookup accepts the other spelling, so ``--help`` lists every command once.
    """

    # Types come from TyperGroup: typer vendors click in a private module, not to be imported.
    def get_command(self, ctx, cmd_name):
        for name in (cmd_name, cmd_name.replace("_", "-"), cmd_name.replace("-", "_")):
            command = super().get_command(ctx, name)
            if command is not None:
                return command
        return None

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        # Usage lines and error messages then name the command as --help lists it.
        return (command.name if command else name), command, rest


app = typer.Typer(
    cls=_EitherSpellingGroup,
    help="ADIT - Automated DICOM Transfer: run, test and maintain the app.",
    no_args_is_help=True,
    add_completion=False,
)

EXAMPLE_ENV = BASE_DIR / "example.env"
# Placeholders in example.env that init-workspace replaces with fresh random secrets.
RANDOM_SECRETS = {
    "DJANGO_SECRET_KEY": lambda: secrets.token_urlsafe(50),
    "TOKEN_AUTHENTICATION_SALT": lambda: secrets.token_hex(32),
    "SUPERUSER_PASSWORD": lambda: secrets.token_urlsafe(12),
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
}
VENDOR_DIR = BASE_DIR / "adit" / "core" / "static" / "vendor"
# npm package -> files copied from it into the vendor folder (source, destination).
VENDORED_FILES = {
    "bootstrap": [
        ("dist/css/bootstrap.min.css", "bootstrap/bootstrap.min.css"),
        ("dist/css/bootstrap.min.css.map", "bootstrap/bootstrap.min.css.map"),
        ("dist/js/bootstrap.bundle.min.js", "bootstrap/bootstrap.bundle.min.js"),
        ("dist/js/bootstrap.bundle.min.js.map", "bootstrap/bootstrap.bundle.min.js.map"),
        ("LICENSE", "bootstrap/LICENSE"),
    ],
    "bootstrap-icons": [
        ("font/bootstrap-icons.min.css", "bootstrap-icons/bootstrap-icons.min.css"),
        ("font/fonts/bootstrap-icons.woff2", "bootstrap-icons/fonts/bootstrap-icons.woff2"),
        ("font/fonts/bootstrap-icons.woff", "bootstrap-icons/fonts/bootstrap-icons.woff"),
        ("LICENSE", "bootstrap-icons/LICENSE"),
    ],
    "htmx.org": [
        ("dist/htmx.min.js", "htmx/htmx.min.js"),
        ("LICENSE", "htmx/LICENSE"),
    ],
    # Alpine's CSP build evaluates no strings as code, so the Content-Security-Policy can forbid
    # 'unsafe-eval'; its attributes name the properties and methods of Alpine.data() components.
    "@alpinejs/csp": [
        ("dist/cdn.min.js", "alpinejs-csp/alpine-csp.min.js"),
    ],
    "htmx-ext-ws": [
        ("dist/ws.min.js", "htmx-ext-ws/ws.min.js"),
        ("LICENSE", "htmx-ext-ws/LICENSE"),
    ],
    # The upload page reads and pseudonymizes DICOM files in the browser with it; its UMD
    # build bundles its dependencies and sets window.dcmjs; the map is there because the
    # manifest storage of collectstatic follows its sourceMappingURL.
    "dcmjs": [
        ("build/dcmjs.min.js", "dcmjs/dcmjs.min.js"),
        ("build/dcmjs.min.js.map", "dcmjs/dcmjs.min.js.map"),
        ("License.txt", "dcmjs/LICENSE"),
    ],
}
COMPOSE_DEV_FILE = BASE_DIR / "docker-compose.dev.yml"


def _python() -> str:
    return sys.executable


def _run(command: list[str], **kwargs) -> int:
    return subprocess.run(command, cwd=BASE_DIR, **kwargs).returncode


def _manage(*args: str, check: bool = True) -> int:
    code = _run([_python(), "manage.py", *args])
    if check and code != 0:
        raise typer.Exit(code)
    return code


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@app.command("init-workspace")
def init_workspace(
    force: Annotated[bool, typer.Option(help="Overwrite an existing .env file.")] = False,
) -> None:
    """Create .env from example.env, with fresh random secrets."""
    target = env_file()
    if target.exists() and not force:
        typer.echo(f"{target} exists already; left as it is (use --force to recreate it).")
        return
    lines = []
    for line in EXAMPLE_ENV.read_text().splitlines():
        name, sep, _value = line.partition("=")
        if sep and not line.startswith("#") and name.strip() in RANDOM_SECRETS:
            line = f"{name.strip()}={RANDOM_SECRETS[name.strip()]()}"
        lines.append(line)
    target.write_text("\n".join(lines) + "\n")
    target.chmod(0o600)
    typer.echo(f"Created {target} with random secrets.")


def _database_is_embedded() -> bool:
    load_env()
    return not os.environ.get("DATABASE_URL")


def _pgdata() -> Path:
    load_env()
    data_dir = Path(os.environ.get("ADIT_DATA_DIR") or BASE_DIR / ".adit").resolve()
    return data_dir / "pgdata"


def _start_embedded_database() -> bool:
    """Starts the embedded PostgreSQL if it is used and not running; True if this started it."""
    from adit import embedded_postgres

    if not _database_is_embedded():
        return False
    pgdata = _pgdata()
    if embedded_postgres.running_pid(pgdata) is not None:
        return False
    typer.echo(f"Starting the embedded PostgreSQL server in {pgdata} ...")
    try:
        embedded_postgres.start(pgdata)
    except embedded_postgres.EmbeddedPostgresError as err:
        raise _fail(str(err)) from err
    return True


def _stop_embedded_database() -> None:
    from adit import embedded_postgres

    if embedded_postgres.stop(_pgdata()):
        typer.echo("Stopped the embedded PostgreSQL server.")


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Address the web server listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the web server.")] = 8000,
    demo: Annotated[
        bool,
        typer.Option(
            help="Also run two Orthanc PACS filled with synthetic studies, registered as "
            "DICOM servers, with example groups and users."
        ),
    ] = False,
) -> None:
    """Start the whole app: database, web server, both task workers and the DICOM receiver.

    Creates .env on the first run, applies migrations and creates the superuser. All logs are
    shown together; a process that crashes is restarted; Ctrl-C stops everything.
    """
    from adit.supervisor import Supervisor

    init_workspace(force=False)
    load_env()
    if demo and os.environ["DJANGO_SETTINGS_MODULE"].endswith("production"):
        raise _fail("The demo mode creates users with known passwords; not in production.")
    try:
        worker_processes = dicom_worker_processes()
    except ValueError as err:
        raise _fail(str(err)) from err
    started_database = _start_embedded_database()
    demo_servers: list = []
    try:
        _manage("migrate", "--noinput")
        _manage("create_superuser")
        if os.environ["DJANGO_SETTINGS_MODULE"].endswith("production"):
            _manage("collectstatic", "--noinput", "--verbosity", "0")
        if demo:
            demo_servers = _start_demo()
        _print_login_hint(host, port)
        python = _python()
        asgi_app = "adit.asgi:application"
        dicom_workers = {
            f"dicom_worker_{number}": [python, "manage.py", "worker", "--queue", "dicom"]
            for number in range(1, worker_processes + 1)
        }
        supervisor = Supervisor(
            {
                "web": [python, "-m", "adit.web_server", "-b", host, "-p", str(port), asgi_app],
                "default_worker": [python, "manage.py", "worker", "--queue", "default"],
                **dicom_workers,
                "receiver": [python, "manage.py", "receiver"],
            },
            cwd=BASE_DIR,
            watched={server.ae_title: _demo_pacs_check(server) for server in demo_servers},
        )
        exit_code = supervisor.run()
    finally:
        if demo_servers:
            from adit.core.demo.orthanc import stop_servers

            stop_servers(demo_servers)
        if started_database:
            _stop_embedded_database()
    raise typer.Exit(exit_code)


def _start_demo() -> list:
    """Starts the demo Orthancs, fills ORTHANC1 and registers both with example users."""
    import django

    django.setup()
    from adit.core.demo.orthanc import OrthancError, stop_servers
    from adit.core.demo.pacs import demo_pacs
    from adit.system_packages import MissingSystemPackage

    servers = demo_pacs()
    try:
        for server in servers:
            server.start()
            typer.echo(f"Started {server.ae_title}: DICOM port {server.dicom_port}, {server.url}")
        _manage("populate_orthancs")
        _manage("populate_example_data")
    except (OrthancError, MissingSystemPackage) as err:
        stop_servers(servers)
        raise _fail(f"The demo PACS could not start: {err}") from err
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def _demo_pacs_check(server):
    """For the supervisor: a message once the demo PACS ``server`` has stopped running."""

    def check() -> str | None:
        if server.is_running:
            return None
        return (
            f"the demo PACS stopped (its log: {server.log_path}); it stays unavailable until "
            "'uv run cli up --demo' is started again."
        )

    return check


def _print_login_hint(host: str, port: int) -> None:
    shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    typer.secho(f"\nADIT runs at http://{shown_host}:{port}/", fg=typer.colors.GREEN, bold=True)
    if os.environ["DJANGO_SETTINGS_MODULE"].endswith("development"):
        username = os.environ.get("SUPERUSER_USERNAME")
        if username:
            password = os.environ.get("SUPERUSER_PASSWORD", "")
            typer.echo(f"Log in as '{username}' with password '{password}' (from {env_file()}).")
    typer.echo("Press Ctrl-C to stop.\n")


def _ensure_system_packages() -> None:
    from adit.core.demo.orthanc import REQUIRED_COMMANDS
    from adit.system_packages import MissingSystemPackage, ensure_commands

    try:
        ensure_commands({"/usr/bin/chromium": "chromium", **REQUIRED_COMMANDS})
    except MissingSystemPackage as err:
        raise _fail(str(err)) from err


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def test(ctx: typer.Context) -> None:
    """Run the whole test suite; extra arguments go to pytest, before or after "--".

    Examples: `cli test --cov` (coverage of adit, report in the terminal),
    `cli test -- --cov=adit --cov-report=html -x adit/core`.
    """
    _ensure_system_packages()
    started_database = _start_embedded_database()
    try:
        # The settings module named in .env is for running the app, not for tests.
        code = _run([_python(), "-m", "pytest", "--ds=adit.settings.test", *ctx.args])
    finally:
        if started_database:
            _stop_embedded_database()
    raise typer.Exit(code)


@app.command()
def bench(
    benchmark: Annotated[
        str,
        typer.Argument(
            help="Which benchmark to run: 'fetch', 'transfer', 'batch-query', 'batch-transfer', "
            "'dicomweb' or 'instance-size'."
        ),
    ],
    instances: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CT slices (512x512, 16 bit, ~0.5 MB each) in the study [fetch, transfer, "
            "dicomweb: 1000]; batch-transfer: in each study [10]; instance-size: in the "
            "compressed study (and the uncompressed one) [200].",
            show_default=False,
        ),
    ] = None,
    repeat: Annotated[
        int, typer.Option(min=1, help="Runs per method; the median is reported.")
    ] = 3,
    profile: Annotated[
        bool,
        typer.Option(
            help="fetch: add cProfile runs of the operator's C-GET and C-MOVE and per-instance "
            "costs. transfer: add a plain run (N) and a pseudonymized one (small study) by a "
            "worker under cProfile. batch-transfer: add a batch job by a worker under cProfile. "
            "dicomweb: add a run of each ADIT method by daphne under cProfile. instance-size: "
            "add a JPEG 2000 transfer by a worker under cProfile, to look for pixel codecs."
        ),
    ] = True,
    what_if: Annotated[
        bool,
        typer.Option(
            help="fetch only: add variants that show what a change would gain: a bare "
            "pynetdicom C-GET, writing raw bytes, a faster pynetdicom poll, a C-MOVE without "
            "its C-FIND listing."
        ),
    ] = False,
    small_instances: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="transfer only: slices of the smaller study whose plain transfer the worker's "
            "peak memory is compared with (default: a quarter of --instances).",
        ),
    ] = None,
    record: Annotated[
        bool, typer.Option(help="Append a dated section with the results to bench/RESULTS.md.")
    ] = True,
    lines: Annotated[
        int, typer.Option(min=1, help="batch-query only: lines of the batch file.")
    ] = 1000,
    patients: Annotated[
        int,
        typer.Option(min=1, help="batch-query only: patients in the PACS, three studies each."),
    ] = 1000,
    studies: Annotated[
        int,
        typer.Option(min=2, help="batch-transfer only: studies in the batch job, a task each."),
    ] = 100,
    instance_mib: Annotated[
        int,
        typer.Option(
            min=1,
            help="instance-size only: MiB of each of the six multi-frame instances of the "
            "large study.",
        ),
    ] = 200,
) -> None:
    """Benchmark the DICOM layer or the job engine against real Orthancs (see bench/README.md).

    fetch: uploads a synthetic CT study to a temporary Orthanc, then fetches it with dcmtk
    getscu (C-GET) and movescu (C-MOVE), and with DicomOperator.fetch_study by C-GET, by C-MOVE
    through ADIT's receiver and by WADO-RS, each with and without writing the instances to disk.
    Prints seconds, instances/s, the ratio to dcmtk, CPU and peak memory per method. A full run
    at the defaults takes about three minutes, five with --what-if.

    transfer: copies a synthetic CT study from one temporary Orthanc to another through a real
    job run by a real worker, plain, pseudonymized and plain by the source's direct C-MOVE to
    the destination, and compares it with Orthanc's own C-MOVE between the same two Orthancs;
    also a smaller study, for the worker's peak memory. Runs in a throwaway database
    (adit_bench) on the same PostgreSQL server, dropped at the end. Prints instances/s, ratios
    and PASS/MISS for the issue's targets. About seven minutes at the defaults.

    batch-query: a batch file of --lines lines (patient ID and modality) against an Orthanc
    holding the studies of --patients patients: a loop of dcmtk findscu, one per line, against
    a batch query job run by a real worker, every line's results checked; prints lines/s, the
    ratio, and the most associations open at the Orthanc at once. About three minutes.

    batch-transfer: a batch transfer job of --studies small studies (--instances each) from one
    temporary Orthanc to another, run by a real worker, against Orthanc's own C-MOVE of the
    same studies, and against a job of one study of as many instances: prints the ratio and
    ADIT's overhead per task in ms, also with the source's direct C-MOVE. About six minutes.

    dicomweb: ADIT's DICOMweb API served by daphne: WADO-RS of a synthetic CT study through ADIT
    from a WADO-RS source against Orthanc's own WADO-RS, and from a C-GET source against dcmtk
    getscu; STOW-RS of as many instances through ADIT to a C-STORE destination against
    Orthanc's own STOW-RS; daphne's peak memory retrieving N/10 against N instances. Prints the
    ratios with PASS/FAIL for the issue's targets; runs in a throwaway database. About six
    minutes at the defaults.

    instance-size: a study of six ~200 MiB multi-frame instances copied by a real worker over
    C-GET, C-MOVE (through the receiver) and WADO-RS with the default and a 64 MiB pipeline
    budget: the worker's (and the receiver's) peak memory against the budget; and a JPEG 2000
    study of --instances slices copied by C-GET and C-STORE: transfer syntax and pixel data
    unchanged on the destination, worker CPU per instance against the uncompressed study and
    Orthanc's own C-MOVE. Runs in a throwaway database.
    """
    benchmarks = ("fetch", "transfer", "batch-query", "batch-transfer", "dicomweb", "instance-size")
    if benchmark not in benchmarks:
        raise typer.BadParameter(
            f"unknown benchmark {benchmark!r}; use one of {', '.join(benchmarks)}.",
            param_hint="BENCHMARK",
        )
    if benchmark == "batch-transfer":
        if what_if or small_instances is not None:
            raise typer.BadParameter(
                "--small-instances and --what-if do not apply to 'batch-transfer'.",
                param_hint="BENCHMARK",
            )
        _bench_with_database(
            "batch_transfer",
            studies=studies,
            instances=instances if instances is not None else 10,
            repeat=repeat,
            profile=profile,
            record=record,
        )
        return
    if benchmark == "instance-size":
        if what_if or small_instances is not None:
            raise typer.BadParameter(
                "--small-instances and --what-if do not apply to 'instance-size'.",
                param_hint="BENCHMARK",
            )
        _bench_with_database(
            "instance_size",
            instances=instances if instances is not None else 200,
            instance_mib=instance_mib,
            repeat=repeat,
            profile=profile,
            record=record,
        )
        return
    if instance_mib != 200:
        raise typer.BadParameter("applies to 'instance-size' only.", param_hint="--instance-mib")
    instances = instances if instances is not None else 1000
    if benchmark == "dicomweb":
        if what_if or small_instances is not None:
            raise typer.BadParameter(
                "--small-instances and --what-if do not apply to 'dicomweb'.",
                param_hint="BENCHMARK",
            )
        if instances < 10:
            raise typer.BadParameter(
                "must be at least 10 for 'dicomweb' (its memory comparison retrieves a tenth).",
                param_hint="--instances",
            )
        _bench_with_database(
            "dicomweb", instances=instances, repeat=repeat, profile=profile, record=record
        )
        return
    if benchmark == "batch-query":
        if what_if or small_instances is not None or instances != 1000:
            raise typer.BadParameter(
                "--instances, --small-instances and --what-if do not apply to 'batch-query'; "
                "use --lines and --patients.",
                param_hint="BENCHMARK",
            )
        _bench_with_database(
            "batch_query", lines=lines, patients=patients, repeat=repeat, record=record
        )
        return
    if benchmark == "transfer":
        if what_if:
            raise typer.BadParameter(
                "applies to 'fetch' only; TCP_NODELAY, which it measured for 'transfer', is now "
                "always on (ADIT sets it on every association).",
                param_hint="--what-if",
            )
        _bench_transfer(instances, small_instances, repeat, profile=profile, record=record)
        return
    if small_instances is not None:
        raise typer.BadParameter("applies to 'transfer' only.", param_hint="--small-instances")
    load_env()
    started_database = _start_embedded_database()
    try:
        import django

        django.setup()
        from adit.core.demo.orthanc import OrthancError
        from adit.system_packages import MissingSystemPackage
        from bench.fetch import BenchmarkError, run_fetch_benchmark

        try:
            run_fetch_benchmark(
                instances,
                repeat,
                profile=profile,
                what_if=what_if,
                record=record,
                echo=typer.echo,
            )
        except (BenchmarkError, OrthancError, MissingSystemPackage) as err:
            raise _fail(f"The benchmark failed: {err}") from err
    finally:
        if started_database:
            _stop_embedded_database()


def _bench_transfer(
    instances: int,
    small_instances: int | None,
    repeat: int,
    *,
    profile: bool,
    record: bool,
) -> None:
    """``bench transfer``: on the server of ADIT's database, in a database of its own."""
    if small_instances is not None and small_instances >= instances:
        raise typer.BadParameter(
            "must be smaller than --instances.", param_hint="--small-instances"
        )
    _bench_with_database(
        "transfer",
        instances=instances,
        repeat=repeat,
        small_instances=small_instances,
        profile=profile,
        record=record,
    )


def _bench_with_database(benchmark: str, **arguments) -> None:
    """A benchmark of the job engine, on the server of ADIT's database, in a database of its
    own."""
    load_env()
    started_database = _start_embedded_database()
    try:
        # Django is set up by the benchmark itself, on its throwaway database.
        from adit import embedded_postgres
        from adit.core.demo.orthanc import OrthancError
        from adit.system_packages import MissingSystemPackage
        from bench.fetch import BenchmarkError
        from bench.transfer import DatabaseServer

        url = os.environ.get("DATABASE_URL")
        if url:
            server = DatabaseServer.from_url(url)
        else:
            socket_dir = embedded_postgres.socket_dir(_pgdata())
            if socket_dir is None:
                raise _fail("The embedded PostgreSQL server is not running.")
            server = DatabaseServer.embedded(socket_dir)
        if benchmark == "transfer":
            from bench.transfer import run_transfer_benchmark as run
        elif benchmark == "batch_transfer":
            from bench.batch_transfer import run_batch_transfer_benchmark as run
        elif benchmark == "dicomweb":
            from bench.dicomweb import run_dicomweb_benchmark as run
        elif benchmark == "instance_size":
            from bench.instance_size import run_instance_size_benchmark as run
        else:
            from bench.batch_query import run_batch_query_benchmark as run
        try:
            run(server, **arguments, echo=typer.echo)
        except (BenchmarkError, OrthancError, MissingSystemPackage) as err:
            raise _fail(f"The benchmark failed: {err}") from err
    finally:
        if started_database:
            _stop_embedded_database()


@app.command()
def lint() -> None:
    """Check the code with ruff, pyright and djlint."""
    bin_dir = Path(_python()).parent
    failed = False
    for command in (
        [str(bin_dir / "ruff"), "check", "."],
        [str(bin_dir / "ruff"), "format", "--check", "."],
        [str(bin_dir / "pyright")],
        [str(bin_dir / "djlint"), "adit", "--lint"],
    ):
        typer.secho(" ".join([Path(command[0]).name, *command[1:]]), bold=True)
        failed |= _run(command) != 0
    if failed:
        raise typer.Exit(1)


@app.command("format-code")
def format_code() -> None:
    """Format the code with ruff (imports too) and the templates with djlint."""
    bin_dir = Path(_python()).parent
    _run([str(bin_dir / "ruff"), "check", "--select", "I", "--fix", "."])
    _run([str(bin_dir / "ruff"), "format", "."])
    _run([str(bin_dir / "djlint"), "adit", "--reformat", "--quiet"])


@app.command()
def shell() -> None:
    """Open a Django shell."""
    _start_embedded_database()
    raise typer.Exit(_manage("shell", check=False))


@app.command("copy-statics")
def copy_statics() -> None:
    """Fetch the front-end libraries from the npm registry and vendor them into the app."""
    npm = shutil.which("npm")
    if npm is None:
        raise _fail("npm is needed to fetch the front-end libraries: apt-get install npm")
    if _run([npm, "ci", "--no-audit", "--no-fund"]) != 0:
        raise _fail("npm ci failed; see its output above.")
    node_modules = BASE_DIR / "node_modules"
    shutil.rmtree(VENDOR_DIR, ignore_errors=True)
    for package, files in VENDORED_FILES.items():
        for source, destination in files:
            target = VENDOR_DIR / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(node_modules / package / source, target)
    typer.echo(f"Copied the front-end libraries into {VENDOR_DIR.relative_to(BASE_DIR)}.")


def _pg_tool(name: str) -> str:
    """pg_dump/pg_restore: the embedded server's own, else the ones on PATH."""
    if _database_is_embedded():
        from adit import embedded_postgres

        return str(embedded_postgres.bin_dir() / name)
    found = shutil.which(name)
    if found is None:
        raise _fail(f"{name} is not installed: apt-get install postgresql-client")
    return found


def _database_connection_args() -> tuple[list[str], dict[str, str]]:
    """Command-line arguments and environment for libpq tools to reach ADIT's database."""
    load_env()
    import django

    django.setup()
    from django.conf import settings

    database = settings.DATABASES["default"]
    args = ["--dbname", database["NAME"], "--username", database["USER"] or "postgres"]
    if database.get("HOST"):
        args += ["--host", database["HOST"]]
    if database.get("PORT"):
        args += ["--port", str(database["PORT"])]
    env = dict(os.environ)
    if database.get("PASSWORD"):
        env["PGPASSWORD"] = database["PASSWORD"]
    return args, env


@app.command("db-backup")
def db_backup(
    file: Annotated[
        Path | None, typer.Argument(help="Backup file (default: a dated file in the data dir).")
    ] = None,
) -> None:
    """Write a backup of the database (pg_dump custom format)."""
    started_database = _start_embedded_database()
    try:
        args, env = _database_connection_args()
        if file is None:
            from datetime import datetime

            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            file = _pgdata().parent / "backups" / f"adit-{stamp}.dump"
        file.parent.mkdir(parents=True, exist_ok=True)
        code = _run([_pg_tool("pg_dump"), "--format=custom", "--file", str(file), *args], env=env)
        if code != 0:
            raise _fail("pg_dump failed; see its message above.")
        typer.echo(f"Backup written to {file}")
    finally:
        if started_database:
            _stop_embedded_database()


@app.command("db-restore")
def db_restore(
    file: Annotated[Path, typer.Argument(help="A backup file written by db-backup.")],
) -> None:
    """Replace the database content with a backup written by db-backup."""
    if not file.is_file():
        raise _fail(f"No backup file at {file}.")
    started_database = _start_embedded_database()
    try:
        args, env = _database_connection_args()
        command = [_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", *args]
        code = _run([*command, str(file)], env=env)
        if code != 0:
            raise _fail("pg_restore failed; see its message above.")
        typer.echo(f"Database restored from {file}")
    finally:
        if started_database:
            _stop_embedded_database()


def _compose(*args: str) -> None:
    docker = shutil.which("docker")
    if docker is None:
        raise _fail("Docker is not installed; use 'uv run cli up' to run ADIT without it.")
    code = _run([docker, "compose", "-f", str(COMPOSE_DEV_FILE), *args])
    if code != 0:
        raise _fail(f"docker compose {' '.join(args)} failed (is the Docker engine running?).")


@app.command("compose-up")
def compose_up() -> None:
    """Run the development stack in Docker (docker compose with the dev file)."""
    init_workspace(force=False)
    _compose("up", "--build", "--detach")


@app.command("compose-down")
def compose_down() -> None:
    """Stop the Docker development stack."""
    _compose("down")


if __name__ == "__main__":
    app()
