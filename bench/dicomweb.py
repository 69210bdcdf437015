"""The DICOMweb API benchmark: ``uv run cli bench dicomweb``.

ADIT's DICOMweb API (``/api/dicom-web/<AE title>/``, app ``adit.dicom_web``) is served by
daphne as ``cli up`` serves it (``adit.web_server``), and called over HTTP by the same client as
each baseline, in one session:

* WADO-RS of a study of N CT slices (512x512, 16 bit, about 0.5 MB each) through ADIT from a
  DICOMweb source (Orthanc's DICOMweb plugin, the server row flagged QIDO-RS + WADO-RS),
  against the same client fetching the study from Orthanc's own WADO-RS;
* WADO-RS of the same study through ADIT from a C-GET-only source (the same Orthanc by DIMSE,
  the row flagged study-root C-FIND + C-GET), against dcmtk ``getscu`` fetching it by C-GET;
* STOW-RS of N instances through ADIT to a destination Orthanc by C-STORE, against the same
  body posted to that Orthanc's own STOW-RS;
* daphne's peak RSS (VmHWM, reset before each retrieval) retrieving N/10 instances against N
  through ADIT: a retrieval that held the study would grow by about the study's size.

The client is the same for ADIT and Orthanc: ``requests`` streaming the response, ADIT's own
multipart reader (``adit.core.dicom.multipart.iter_parts``) taking it apart, the SOP Instance
UID read from each part's file meta information; nothing is decoded or written. Every run is
checked: all N SOP Instance UIDs of the study arrived, each once (getscu: it received N
instances); after a STOW the destination holds exactly the N instances of the study (it is
cleared before every STOW). A run that delivers less is an error, not a number.

The API needs database rows (a user with a token, a group with the permissions and access to
the servers), so the bench runs in a throwaway database as ``bench transfer`` does. Each round
starts a fresh daphne on it, warmed up with a retrieval of a 5-instance study through both
sources and a 5-instance STOW before anything is timed; every method then runs once, round by
round, ``repeat`` times; the median counts. Optionally (``profile``) one more run of each ADIT
method by a daphne under cProfile in every thread says where its time goes.
"""

from __future__ import annotations

import datetime
import functools
import os
import pstats
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import common
from bench.common import RESULTS_FILE, BenchmarkError, Echo, ProfileSummary
from bench.transfer import (
    BASE_DIR,
    SETTINGS_MODULE,
    DatabaseServer,
    TransferFailed,
    Worker,
    bench_database,
    engine_versions,
    once_more_on_failure,
)

if TYPE_CHECKING:
    import requests

    from adit.core.demo.orthanc import OrthancServer

LOOPBACK = "127.0.0.1"
SOURCE_AE = "BENCHPACS"  # the source Orthanc, and its row reached by C-FIND + C-GET
WEB_AE = "BENCHWEB"  # the row that reaches the same Orthanc by QIDO-RS + WADO-RS only
DESTINATION_AE = "BENCHDST"  # the destination Orthanc, reached by C-STORE
GETSCU_AE = "DCMTKBENCH"
# dcmtk keeps Nagle's algorithm on unless this is set; every C-STORE then stalls for ~40 ms.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

ROWS = COLUMNS = 512
SEED = 0
SMALL_SEED = 1
WARM_UP_SEED = 2
STOW_SEED = 3
STOW_WARM_UP_SEED = 4
WARM_UP_INSTANCES = 5
SMALL_SHARE = 10  # the memory comparison retrieves N / SMALL_SHARE instances against N

TARGET_WADO_WEB = 0.8  # (a) ADIT's WADO-RS from a WADO-RS source >= 0.8x Orthanc's own
TARGET_WADO_GET = 0.5  # (b) ADIT's WADO-RS from a C-GET source >= 0.5x getscu
TARGET_STOW = 0.5  # (c) ADIT's STOW-RS to a C-STORE destination >= 0.5x Orthanc's own
TARGET_GROWTH_MIB = 25.0  # (d) daphne's peak at N at most this much above its peak at N/10

# Instances as stored: neither side converts anything.
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CHUNK_BYTES = 256 * 1024  # what the client reads at a time, as ADIT's own WADO-RS client does
BOUNDARY = "adit-bench-dicomweb-boundary"
STOW_CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
# Where the file meta information's MediaStorageSOPInstanceUID (0002,0003) starts, explicit VR
# little endian as file meta always is.
_MEDIA_SOP_UID = b"\x02\x00\x03\x00UI"
DAPHNE_READY_TIMEOUT = 60.0
HTTP_TIMEOUT = (10, 600)  # connect, read (seconds)
PROFILE_TOP = 15


@dataclass(frozen=True)
class Method:
    """One way of moving the study.

    Attributes:
        key: Short name.
        label: Name in the tables.
        baseline: Key of the method this one is compared with; None for a baseline.
        target: The least ratio to the baseline the issue asks for.
        through_adit: Whether it calls ADIT's API (daphne serves it).
        store: Whether it stores the study (STOW-RS) rather than retrieves it.
    """

    key: str
    label: str
    baseline: str | None = None
    target: float | None = None
    through_adit: bool = False
    store: bool = False

    @property
    def retrieves_through_adit(self) -> bool:
        return self.through_adit and not self.store


METHODS = [
    Method("orthanc-wado", "Orthanc WADO-RS, direct"),
    Method(
        "adit-wado-web", "ADIT WADO-RS <- WADO-RS source", "orthanc-wado", TARGET_WADO_WEB, True
    ),
    # Not a target: what any DICOMweb proxy in this stack could reach at most (bench/byte_proxy.py).
    Method("byte-proxy", "Byte proxy, no DICOM handling (floor)", "orthanc-wado"),
    Method("getscu", "dcmtk getscu C-GET (--ignore)"),
    Method("adit-wado-get", "ADIT WADO-RS <- C-GET source", "getscu", TARGET_WADO_GET, True),
    Method("orthanc-stow", "Orthanc STOW-RS, direct", store=True),
    Method(
        "adit-stow",
        "ADIT STOW-RS -> C-STORE destination",
        "orthanc-stow",
        TARGET_STOW,
        True,
        store=True,
    ),
]
TARGET_NAMES = {"adit-wado-web": "(a)", "adit-wado-get": "(b)", "adit-stow": "(c)"}


@dataclass(frozen=True)
class Study:
    """A synthetic CT study: on the source Orthanc, or in a STOW-RS body."""

    instances: int
    study_uid: str
    sop_uids: frozenset[str]
    mib: float = 0.0


@dataclass
class Run:
    """One timed retrieval or store of the N-instance study.

    Attributes:
        seconds: From sending the request until the last byte of the answer was read.
        cpu_orthanc: CPU seconds of both Orthancs during the run.
        cpu_client: CPU seconds of the client: this process, or getscu.
        mib: MiB of instances received or sent (the parts' bodies).
        cpu_daphne: CPU seconds of daphne during the run (ADIT's methods only).
        hwm_mb: daphne's VmHWM after the run, reset just before it.
        small_hwm_mb: daphne's VmHWM after retrieving N/10 instances the same way, reset just
            before that.
        rss_before_mb: daphne's RSS just before the run.
    """

    seconds: float
    cpu_orthanc: float
    cpu_client: float
    mib: float
    cpu_daphne: float | None = None
    hwm_mb: float | None = None
    small_hwm_mb: float | None = None
    rss_before_mb: float | None = None

    @property
    def rise_mb(self) -> float | None:
        """How far daphne's peak during the run rose above its RSS before it."""
        if self.hwm_mb is None or self.rss_before_mb is None:
            return None
        return self.hwm_mb - self.rss_before_mb

    @property
    def growth_mb(self) -> float | None:
        if self.hwm_mb is None or self.small_hwm_mb is None:
            return None
        return self.hwm_mb - self.small_hwm_mb


class MethodResult(common.MethodResultBase[Method, Run]):
    @property
    def cpu_daphne(self) -> float | None:
        return self.median_of("cpu_daphne")

    @property
    def cpu_client(self) -> float | None:
        return self.median_of("cpu_client")

    @property
    def mib(self) -> float | None:
        return self.median_of("mib")

    @property
    def hwm_mb(self) -> float | None:
        return self.maximum_of("hwm_mb")

    @property
    def small_hwm_mb(self) -> float | None:
        return self.maximum_of("small_hwm_mb")

    @property
    def growth_mb(self) -> float | None:
        """The largest growth of one run: memory is judged by the worst run."""
        return self.maximum_of("growth_mb")

    @property
    def rise_mb(self) -> float | None:
        return self.maximum_of("rise_mb")


@dataclass
class Report(common.ResultsByKey[MethodResult]):
    """Everything one session measured."""

    instances: int
    small_instances: int
    repeat: int
    study_mib: float
    upload_seconds: float
    machine: dict[str, str]
    versions: dict[str, str]
    results: list[MethodResult]
    load_before: float
    load_after: float = 0.0
    started: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))
    profiles: list[ProfileSummary] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # runs that did not deliver, not counted

    def ratio(self, result: MethodResult) -> float | None:
        """Throughput relative to the method's baseline, 1.00 = as fast."""
        if result.method.baseline is None:
            return None
        return result.rate / self.need(result.method.baseline).rate

    def worst_growth(self) -> tuple[MethodResult, float] | None:
        """The ADIT retrieval whose daphne grew most from N/10 to N instances, and by how much."""
        grown: list[tuple[MethodResult, float]] = []
        for result in self.results:
            growth = result.growth_mb
            if result.method.retrieves_through_adit and growth is not None:
                grown.append((result, growth))
        return max(grown, key=lambda item: item[1]) if grown else None


# -- daphne ---------------------------------------------------------------------------------


class Daphne(Worker):
    """ADIT's ASGI app served by daphne on the bench database, its output in a log file.

    With ``profile_to`` daphne runs under cProfile in every thread and writes the merged
    statistics there when it stops (see ``_profiled_daphne``).
    """

    def __init__(
        self,
        log_path: Path,
        profile_to: Path | None = None,
        app: str = "adit.asgi:application",
        extra_env: dict[str, str] | None = None,
    ):
        super().__init__(log_path, profile_to)
        self.app = app
        self.extra_env = extra_env or {}
        self.port = 0
        self.url = ""

    def start(self) -> None:
        import psutil

        from adit.core.demo.orthanc import free_ports, parent_death_signal

        (self.port,) = free_ports(1)
        self.url = f"http://{LOOPBACK}:{self.port}"
        arguments = ["-b", LOOPBACK, "-p", str(self.port), self.app]
        if self.profile_to is None:
            command = [sys.executable, "-m", "adit.web_server", *arguments]
        else:
            command = [
                sys.executable,
                "-m",
                "bench.dicomweb",
                "--profile-to",
                str(self.profile_to),
                "--",
                *arguments,
            ]
        env = {
            **os.environ,
            "DATABASE_URL": os.environ["DATABASE_URL"],
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=BASE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # A benchmark killed with SIGKILL must not leave daphne behind.
                preexec_fn=parent_death_signal(),
            )
        self._ps = psutil.Process(self.process.pid)

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise BenchmarkError(
                f"daphne exited with code {self.process.returncode}:\n{self.log_tail()}"
            )

    def wait_until_ready(self, timeout: float = DAPHNE_READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}/health/", timeout=5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchmarkError(
                        f"daphne did not answer after {timeout:g} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.1)

    def cpu(self) -> float:
        return common.process_cpu_seconds(self.pid)


def _profiled_daphne(argv: list[str]) -> int:
    """``python -m bench.dicomweb --profile-to PATH -- DAPHNE-ARGS``: daphne under cProfile in
    every thread (the event loop, Django's thread for synchronous code, the fetch threads,
    pynetdicom's), the merged statistics written when it stops (daphne stops on SIGTERM)."""
    if len(argv) < 3 or argv[0] != "--profile-to" or argv[2] != "--":
        print("usage: python -m bench.dicomweb --profile-to PATH -- DAPHNE-ARGS...")
        return 2
    from adit.web_server import CommandLineInterface

    output = Path(argv[1])
    profiler = common.ThreadProfiler()
    try:
        with profiler:
            CommandLineInterface().run(argv[3:])
    finally:
        profiler.stats().dump_stats(str(output))
        output.with_suffix(".threads").write_text(str(profiler.threads))
    return 0


# -- the client -----------------------------------------------------------------------------


def _sop_uid(body: bytes, number: int) -> str:
    """The MediaStorageSOPInstanceUID of a part that is a DICOM file."""
    start = body.find(_MEDIA_SOP_UID, 0, 1024)
    if start < 0 or body[128:132] != b"DICM":
        raise TransferFailed(
            f"part {number} is no DICOM file with file meta information: {body[:200]!r}",
            f"part {number} is no DICOM file",
        )
    length = int.from_bytes(body[start + 6 : start + 8], "little")
    return body[start + 8 : start + 8 + length].rstrip(b"\x00 ").decode("ascii")


def read_instances(response: requests.Response, what: str) -> tuple[list[str], int]:
    """The SOP Instance UIDs of a WADO-RS answer's parts, in order, and the parts' bytes.

    Raises:
        TransferFailed: If the answer is no multipart of DICOM files, or ends with an error.
    """
    from adit.core.dicom.multipart import MultipartError, boundary_of, iter_parts

    if response.status_code != 200:
        message = f"{what} answered {response.status_code}: {response.text[:500]}"
        raise TransferFailed(message, message)
    uids: list[str] = []
    size = 0
    try:
        boundary = boundary_of(response.headers.get("Content-Type", ""))
        for part in iter_parts(response.iter_content(CHUNK_BYTES), boundary):
            if not part.content_type.startswith("application/dicom"):
                message = f"{what}: part {len(uids) + 1} is {part.content_type}"
                raise TransferFailed(f"{message}: {part.body[:500]!r}", message)
            uids.append(_sop_uid(part.body, len(uids) + 1))
            size += len(part.body)
    except MultipartError as err:
        raise TransferFailed(f"{what}: {err}", f"{what}: {err}") from err
    return uids, size


def check_study(uids: list[str], study: Study, what: str) -> None:
    """Every instance of ``study`` arrived, once, and nothing else."""
    got = set(uids)
    if len(uids) != study.instances or got != study.sop_uids:
        message = (
            f"{what} delivered {len(uids)} instances ({len(got & study.sop_uids)} of the "
            f"study's {study.instances}, {len(got - study.sop_uids)} others)"
        )
        raise TransferFailed(message, message)


def stow_body(path: Path, datasets: Iterable[Any]) -> tuple[Study, int]:
    """Writes a STOW-RS body of the datasets to ``path``; its study and its length in bytes."""
    import io

    import pydicom

    uids: set[str] = set()
    study_uid = ""
    size = 0
    with path.open("wb") as body:
        for dataset in datasets:
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
            data = buffer.getvalue()
            body.write(
                f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode("ascii")
            )
            body.write(data)
            body.write(b"\r\n")
            uids.add(str(dataset.SOPInstanceUID))
            study_uid = str(dataset.StudyInstanceUID)
            size += len(data)
        body.write(f"--{BOUNDARY}--\r\n".encode("ascii"))
    return Study(len(uids), study_uid, frozenset(uids), size / 2**20), size


# -- the benchmark ----------------------------------------------------------------------------


class DicomWebBenchmark(common.Session):
    """The two Orthancs, the STOW-RS bodies, the database rows and the folders of one session.

    Use as a context manager; leaving it stops both Orthancs and removes every folder, also on
    Ctrl-C.
    """

    def __init__(self, instances: int, echo: Echo):
        super().__init__("adit-bench-dicomweb-")
        self.instances = instances
        self.small_instances = max(1, instances // SMALL_SHARE)
        self.echo = echo
        self.source: OrthancServer | None = None
        self.destination: OrthancServer | None = None
        self.studies: dict[str, Study] = {}  # "large", "small", "warm-up" on the source
        self.stow_studies: dict[str, tuple[Study, Path, int]] = {}  # "large", "warm-up"
        self.upload_seconds = 0.0
        self.token = ""
        self._runs = 0
        self._byte_proxy: Daphne | None = None

    # -- set-up ---------------------------------------------------------------------------

    def start(self) -> None:
        """Starts both Orthancs, uploads the studies, writes the STOW bodies, creates rows."""
        from adit.core.demo.orthanc import OrthancServer, stop_servers
        from adit.system_packages import ensure_commands

        ensure_commands({common.GETSCU: "dcmtk"})
        source = OrthancServer(SOURCE_AE, storage_dir=self.workdir / "source")
        destination = OrthancServer(DESTINATION_AE, storage_dir=self.workdir / "destination")
        self._stack.callback(stop_servers, [source, destination])
        source.start()
        destination.start()
        self.source, self.destination = source, destination
        self.echo(
            f"Uploading CT studies of {self.instances}, {self.small_instances} and "
            f"{WARM_UP_INSTANCES} instances ({ROWS}x{COLUMNS}, 16 bit) to Orthanc {SOURCE_AE} ..."
        )
        started = time.perf_counter()
        for name, count, seed in (
            ("large", self.instances, SEED),
            ("small", self.small_instances, SMALL_SEED),
            ("warm-up", WARM_UP_INSTANCES, WARM_UP_SEED),
        ):
            self.studies[name] = self._upload(count, seed)
        self.upload_seconds = time.perf_counter() - started
        self.echo(
            f"Uploaded {self.studies['large'].mib:.0f} MiB (the large study) in "
            f"{self.upload_seconds:.1f} s. Writing the STOW-RS bodies ..."
        )
        from adit.core.demo.synthetic import generate_ct_series

        for name, count, seed in (
            ("large", self.instances, STOW_SEED),
            ("warm-up", WARM_UP_INSTANCES, STOW_WARM_UP_SEED),
        ):
            path = self.workdir / f"stow-{name}.body"
            series = generate_ct_series(count, rows=ROWS, columns=COLUMNS, seed=seed)
            study, _ = stow_body(path, series)
            self.stow_studies[name] = (study, path, path.stat().st_size)
        self._create_rows()

    def _upload(self, instances: int, seed: int) -> Study:
        from adit.core.demo.synthetic import describe_ct_series, generate_ct_series

        assert self.source is not None
        summary = describe_ct_series(instances, seed=seed)
        self.source.upload(generate_ct_series(instances, rows=ROWS, columns=COLUMNS, seed=seed))
        uid = summary.study_instance_uid
        held = self.source.study_instance_uids(uid)
        if len(held) != instances:
            raise BenchmarkError(f"{SOURCE_AE} holds {len(held)} of the {instances} instances.")
        query = {"Level": "Study", "Query": {"StudyInstanceUID": uid}}
        (orthanc_id,) = self.source.rest("POST", "/tools/find", query)
        size = int(self.source.rest("GET", f"/studies/{orthanc_id}/statistics")["DiskSize"])
        return Study(instances, uid, frozenset(held), size / 2**20)

    def _create_rows(self) -> None:
        """A user with a token, in a group that may do everything with the three rows."""
        from django.contrib.auth.models import Group, Permission

        from adit.accounts.models import User
        from adit.core.models import DicomNodeGroupAccess, DicomServer
        from adit.token_authentication.models import Token

        assert self.source is not None and self.destination is not None
        group = Group.objects.create(name="Bench")
        group.permissions.add(
            *Permission.objects.filter(
                content_type__app_label="dicom_web",
                codename__in=[
                    "can_query",
                    "can_retrieve",
                    "can_store",
                    "can_retrieve_unpseudonymized",
                ],
            )
        )
        user = User.objects.create_user(username="bench")
        user.groups.add(group)
        user.active_group = group
        user.save()
        rows = [
            (
                DicomServer.objects.create(
                    name="Bench PACS (C-GET)",
                    ae_title=SOURCE_AE,
                    host=LOOPBACK,
                    port=self.source.dicom_port,
                    study_root_find_support=True,
                    study_root_get_support=True,
                ),
                True,
            ),
            (
                DicomServer.objects.create(
                    name="Bench PACS (DICOMweb)",
                    ae_title=WEB_AE,
                    dicomweb_root_url=self.source.dicomweb_root,
                    dicomweb_qido_support=True,
                    dicomweb_wado_support=True,
                ),
                True,
            ),
            (
                DicomServer.objects.create(
                    name="Bench archive (C-STORE)",
                    ae_title=DESTINATION_AE,
                    host=LOOPBACK,
                    port=self.destination.dicom_port,
                    store_scp_support=True,
                ),
                False,
            ),
        ]
        for row, source in rows:
            DicomNodeGroupAccess.objects.create(
                dicom_node=row, group=group, source=source, destination=not source
            )
        _, self.token = Token.objects.create_token(user, "bench")

    # -- measuring ------------------------------------------------------------------------

    def orthanc_cpu(self) -> float:
        assert self.source is not None and self.destination is not None
        return common.process_cpu_seconds(self.source.pid) + common.process_cpu_seconds(
            self.destination.pid
        )

    def new_daphne(self, profile_to: Path | None = None) -> Daphne:
        """A fresh daphne, warmed up: the first retrieval and store of a process pay for
        imports and first connections, which a long-running server paid long ago."""
        self._runs += 1
        daphne = Daphne(self.workdir / f"daphne-{self._runs}.log", profile_to)
        daphne.start()
        try:
            daphne.wait_until_ready()
            warm_up = self.studies["warm-up"]
            for ae_title in (WEB_AE, SOURCE_AE):
                self._retrieve(self._adit_root(daphne, ae_title), warm_up, daphne)
            self._store(daphne, self.stow_studies["warm-up"], self._adit_root(daphne, ""))
        except BaseException:
            daphne.stop()
            raise
        return daphne

    def measure(self, method: Method, daphne: Daphne | None) -> Run:
        """Moves the N-instance study once with ``method``; returns the figures of the run."""
        assert self.source is not None and self.destination is not None
        if method.key == "getscu":
            return self._getscu()
        if method.key == "byte-proxy":
            proxy = self.byte_proxy()
            return self._retrieve(proxy.url, self.studies["large"], proxy)
        if method.store:
            root = self._adit_root(daphne, "") if method.through_adit else None
            return self._store(
                daphne if method.through_adit else None, self.stow_studies["large"], root
            )
        if not method.through_adit:
            return self._retrieve(self.source.dicomweb_root, self.studies["large"], None)
        assert daphne is not None
        root = self._adit_root(daphne, WEB_AE if method.key == "adit-wado-web" else SOURCE_AE)
        small = self._retrieve(root, self.studies["small"], daphne)
        run = self._retrieve(root, self.studies["large"], daphne)
        run.small_hwm_mb = small.hwm_mb
        return run

    def byte_proxy(self) -> Daphne:
        """The web server passing the source's WADO-RS through (bench/byte_proxy.py), started
        at its first use and stopped with the session."""
        if self._byte_proxy is None:
            from bench.byte_proxy import TARGET_ENV

            assert self.source is not None
            proxy = Daphne(
                self.workdir / "byte-proxy.log",
                app="bench.byte_proxy:application",
                extra_env={TARGET_ENV: self.source.dicomweb_root},
            )
            self._stack.callback(proxy.stop)
            proxy.start()
            proxy.wait_until_ready()
            self._byte_proxy = proxy
        return self._byte_proxy

    def _adit_root(self, daphne: Daphne | None, ae_title: str) -> str:
        assert daphne is not None
        return f"{daphne.url}/api/dicom-web/{ae_title or DESTINATION_AE}"

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def _before(self, daphne: Daphne | None) -> tuple[bool, float, float, float, float | None]:
        """Resets daphne's high-water mark; the readings a run starts from."""
        rss = daphne.rss_mb() if daphne is not None else None
        reset = daphne.reset_high_water_mark() if daphne is not None else False
        return (
            reset,
            self.orthanc_cpu(),
            daphne.cpu() if daphne is not None else 0.0,
            _own_cpu(),
            rss,
        )

    def _retrieve(self, root: str, study: Study, daphne: Daphne | None = None) -> Run:
        """WADO-RS of ``study`` from ``root`` (ADIT's API, or Orthanc's when daphne is None)."""
        import requests

        url = f"{root}/studies/{study.study_uid}"
        headers = {"Accept": ACCEPT, **(self._headers if daphne is not None else {})}
        what = f"WADO-RS of {study.instances} instances from {root}"
        before = self._before(daphne)
        started = time.perf_counter()
        with requests.get(url, headers=headers, stream=True, timeout=HTTP_TIMEOUT) as response:
            uids, size = read_instances(response, what)
        seconds = time.perf_counter() - started
        run = self._run(seconds, size, daphne, before)
        check_study(uids, study, what)
        return run

    def _store(
        self, daphne: Daphne | None, stow: tuple[Study, Path, int], adit_root: str | None
    ) -> Run:
        """STOW-RS of a body to ADIT's API (``adit_root``) or to the destination's own."""
        import requests

        assert self.destination is not None
        study, path, length = stow
        root = adit_root or self.destination.dicomweb_root
        self.destination.clear()
        if self.destination.count_instances():
            raise BenchmarkError(f"{DESTINATION_AE} still holds instances after clearing it.")
        headers = {
            "Content-Type": STOW_CONTENT_TYPE,
            "Accept": "application/dicom+json",
            **(self._headers if adit_root else {}),
        }
        what = f"STOW-RS of {study.instances} instances to {root}"
        before = self._before(daphne)
        started = time.perf_counter()
        with path.open("rb") as body:
            response = requests.post(
                f"{root}/studies", data=body, headers=headers, timeout=HTTP_TIMEOUT
            )
        seconds = time.perf_counter() - started
        run = self._run(seconds, length, daphne, before)
        if response.status_code != 200:
            message = f"{what} answered {response.status_code}: {response.text[:300]}"
            raise TransferFailed(message, message)
        answer = response.json()
        referenced = answer.get("00081199", {}).get("Value", [])
        held = self.destination.study_instance_uids(study.study_uid)
        if len(referenced) != study.instances:
            message = f"{what}: the answer references {len(referenced)} instances"
            raise TransferFailed(message, message)
        check_study(held, study, f"{what} (what {DESTINATION_AE} holds)")
        if self.destination.count_instances() != study.instances:
            message = f"{DESTINATION_AE} holds instances of another study after {what}"
            raise TransferFailed(message, message)
        return run

    def _run(
        self,
        seconds: float,
        size: int,
        daphne: Daphne | None,
        before: tuple[bool, float, float, float, float | None],
    ) -> Run:
        reset, cpu_orthanc, cpu_daphne, cpu_client, rss_before = before
        return Run(
            seconds=seconds,
            cpu_orthanc=self.orthanc_cpu() - cpu_orthanc,
            cpu_client=_own_cpu() - cpu_client,
            mib=size / 2**20,
            cpu_daphne=daphne.cpu() - cpu_daphne if daphne is not None else None,
            hwm_mb=daphne.high_water_mark_mb() if daphne is not None and reset else None,
            rss_before_mb=rss_before,
        )

    def _getscu(self) -> Run:
        """dcmtk's C-GET of the study, receiving every instance and storing none."""
        assert self.source is not None
        study = self.studies["large"]
        command = [
            common.GETSCU,
            "-v",
            "-S",
            "--ignore",
            "-aet",
            GETSCU_AE,
            "-aec",
            SOURCE_AE,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study.study_uid}",
            LOOPBACK,
            str(self.source.dicom_port),
        ]
        cpu_orthanc = self.orthanc_cpu()
        cpu_children = _children_cpu()
        started = time.perf_counter()
        process = subprocess.run(
            command,
            cwd=self.workdir,
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            timeout=120 + study.instances,
        )
        seconds = time.perf_counter() - started
        output_text = process.stdout + process.stderr
        received = output_text.count("Received C-STORE Request")
        if process.returncode != 0 or received != study.instances:
            tail = "\n".join(output_text.splitlines()[-10:])
            message = f"getscu received {received} of {study.instances} instances"
            raise TransferFailed(f"{message} (exit code {process.returncode}):\n{tail}", message)
        return Run(
            seconds=seconds,
            cpu_orthanc=self.orthanc_cpu() - cpu_orthanc,
            cpu_client=_children_cpu() - cpu_children,
            mib=study.mib,
        )

    # -- explanations ---------------------------------------------------------------------

    def profile(self, method: Method) -> ProfileSummary:
        """One more run of ``method`` by a fresh daphne under cProfile in every thread."""
        output = self.workdir / f"profile-{method.key}.prof"
        daphne = self.new_daphne(profile_to=output)
        try:
            run = self.measure(method, daphne)
        finally:
            daphne.stop()
        if not output.exists():
            raise BenchmarkError(f"The profiled daphne wrote no statistics to {output}.")
        threads_file = output.with_suffix(".threads")
        threads = int(threads_file.read_text()) if threads_file.exists() else 0
        return common.summarize_profile(
            f"{method.label} (N={self.instances})",
            self.instances,
            pstats.Stats(str(output)),
            run.seconds,
            threads,
            key_functions=KEY_FUNCTIONS,
            top=PROFILE_TOP,
        )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# Functions whose cumulative time explains what daphne does for a retrieval or a store.
KEY_FUNCTIONS: list[common.KeyFunction] = [
    ("WADO-RS view up to the first part", "adit/dicom_web/wado.py", "get"),
    ("C-FIND/QIDO of the study and its series", "adit/core/transfer/study.py", "find_study"),
    # The thread of a ThreadedStream: the fetch of a WADO-RS, the reading of a STOW-RS body.
    ("producer thread (ThreadedStream._run)", "adit/core/dicom/read_ahead.py", "_run"),
    ("producer thread: hand-over (waits when full)", "adit/core/dicom/read_ahead.py", "_put"),
    ("consumer waits for the next item", "adit/core/dicom/read_ahead.py", "next_item"),
    ("WADO-RS from the source (DicomWebConnector)", "adit/core/dicom/dicomweb.py", "retrieve"),
    ("C-GET's C-STORE handler", "adit/core/dicom/dimse.py", "handle_store"),
    ("Dataset from a C-STORE's file (read lazily)", "adit/core/dicom/dimse.py", "_arrived_dataset"),
    ("multipart reader (iter_parts)", "adit/core/dicom/multipart.py", "iter_parts"),
    ("a Dataset from a part (read_instance)", "adit/core/dicom/files.py", "read_instance"),
    ("response: a part per instance", "adit/dicom_web/wado.py", "piece"),
    ("response: encoded_pieces", "adit/core/dicom/files.py", "encoded_pieces"),
    ("response: the chunks (generator, per resumption)", "adit/dicom_web/wado.py", "chunks"),
    ("daphne hands a chunk to Twisted", "daphne/http_protocol.py", "handle_reply"),
    ("STOW-RS view", "adit/dicom_web/stow.py", "post"),
    ("STOW: Django reads the body (coroutine)", "django/core/handlers/asgi.py", "read_body"),
    ("STOW: an instance from its part", "adit/dicom_web/stow.py", "_read_instance"),
    ("STOW: C-STORE per instance", "adit/core/dicom/dimse.py", "send"),
    ("pynetdicom send_c_store", "pynetdicom/association.py", "send_c_store"),
    ("C-STORE of the bytes as received", "adit/core/dicom/dimse.py", "_send_as_received"),
    ("pydicom encodes a Dataset (write_dataset)", "pydicom/filewriter.py", "write_dataset"),
    ("pydicom reads a Dataset (dcmread)", "pydicom/filereader.py", "dcmread"),
    ("pynetdicom DUL reads PDUs", "pynetdicom/dul.py", "_is_transport_event"),
    ("pynetdicom state machine, per PDU", "pynetdicom/fsm.py", "do_action"),
    ("idle sleeps (pynetdicom reactors and others)", "~", "<built-in method time.sleep>"),
]
# What the reading says of each profile: (key function prefix, what it is, per call?).
_PROFILE_PIECES: dict[str, list[tuple[str, str, bool]]] = {
    "adit-wado-web": [
        ("WADO-RS view", "the view up to the first part", False),
        ("producer thread (", "the fetch thread", False),
        ("producer thread: hand-over", "of it waiting for room in the buffer", False),
        ("a Dataset from a part", "decoding a part", True),
        ("response: a part", "making a response part", True),
        ("response: encode", "of it encoded_pieces", True),
        ("daphne hands", "daphne handing a chunk to Twisted", True),
    ],
    "adit-wado-get": [
        ("WADO-RS view", "the view up to the first part", False),
        ("producer thread (", "the fetch thread", False),
        ("producer thread: hand-over", "of it waiting for room in the buffer", False),
        ("C-GET's C-STORE handler", "the C-GET's C-STORE handler", True),
        ("response: a part", "making a response part", True),
        ("response: encode", "of it encoded_pieces", True),
        ("daphne hands", "daphne handing a chunk to Twisted", True),
    ],
    "adit-stow": [
        ("STOW-RS view", "the view", False),
        ("producer thread (", "the thread reading the body", False),
        ("producer thread: hand-over", "of it waiting for room in the buffer", False),
        ("multipart reader", "the multipart reader", False),
        ("consumer waits", "the store waiting for the next instance", False),
        ("STOW: an instance", "reading an instance from its part", True),
        ("STOW: C-STORE", "a C-STORE", True),
        ("idle sleeps", "pynetdicom's idle sleeps", False),
    ],
}


def _profiled_methods() -> list[Method]:
    return [method for method in METHODS if method.through_adit]


# -- reporting ------------------------------------------------------------------------------


def _verdict(met: bool) -> str:
    return "PASS" if met else "FAIL"


def result_rows(report: Report) -> list[list[str]]:
    rows = [
        [
            "method",
            "N",
            "s (median)",
            "min-max s",
            "inst/s",
            "MiB/s",
            "vs baseline",
            "CPU s: daphne",
            "client",
            "Orthancs",
            "daphne MiB: RSS before",
            f"peak N/{SMALL_SHARE}",
            "peak N",
            f"N vs N/{SMALL_SHARE}",
        ]
    ]
    for result in report.results:
        seconds = [run.seconds for run in result.runs]
        ratio = report.ratio(result)
        mib = result.mib
        rows.append(
            [
                result.method.label,
                str(result.instances),
                f"{result.seconds:.2f}",
                f"{min(seconds):.2f}-{max(seconds):.2f}",
                f"{result.rate:.0f}",
                common.number(mib / result.seconds if mib is not None else None),
                "-" if ratio is None else f"{ratio:.2f}x",
                common.number(result.cpu_daphne, 2),
                common.number(result.cpu_client, 2),
                f"{result.cpu_orthanc:.2f}",
                common.number(result.median_of("rss_before_mb")),
                common.number(result.small_hwm_mb),
                common.number(result.hwm_mb),
                common.number(result.growth_mb, 0, sign=True),
            ]
        )
    return rows


def target_rows(report: Report) -> list[list[str]]:
    """The issue's four targets, each with what was measured against what, and its verdict."""
    rows = [["target", "measured", "baseline", "ratio", "target", "verdict"]]
    for result in report.results:
        method = result.method
        ratio = report.ratio(result)
        if method.target is None or ratio is None or method.baseline is None:
            continue
        baseline = report.need(method.baseline)
        rows.append(
            [
                f"{TARGET_NAMES[method.key]} {method.label}",
                f"{result.rate:.0f} inst/s",
                f"{baseline.rate:.0f} inst/s ({baseline.method.label})",
                f"{ratio:.2f}x",
                f">= {method.target}x",
                _verdict(ratio >= method.target),
            ]
        )
    worst = report.worst_growth()
    if worst is None:
        rows.append(["(d) daphne peak RSS growth", "-", "-", "-", "-", "FAIL (not measured)"])
    else:
        result, growth = worst
        rows.append(
            [
                f"(d) daphne peak RSS, N={report.instances} vs N={report.small_instances}",
                f"{result.hwm_mb:.0f} MiB ({result.method.label})",
                f"{result.small_hwm_mb:.0f} MiB",
                f"{growth:+.0f} MiB",
                f"<= +{TARGET_GROWTH_MIB:.0f} MiB",
                _verdict(growth <= TARGET_GROWTH_MIB),
            ]
        )
    return rows


def ceiling_rows(report: Report) -> list[list[str]]:
    """For each target: the web process's CPU per instance against what the target allows.

    daphne serves a request on one core (Python's GIL), so 1000 / (its CPU ms per instance) is
    the most instances per second its work allows, however fast the PACS and the client.
    """
    rows = [
        [
            "target",
            "daphne CPU ms/inst",
            "ceiling inst/s (one process)",
            "ceiling vs baseline",
            "target allows ms/inst",
            "measured of ceiling",
        ]
    ]
    for result in report.results:
        method = result.method
        if method.target is None or method.baseline is None or not result.cpu_daphne:
            continue
        baseline = report.need(method.baseline)
        daphne_ms = 1000 * result.cpu_daphne / result.instances
        ceiling = 1000 / daphne_ms
        allowed_ms = 1000 / (method.target * baseline.rate)
        rows.append(
            [
                f"{TARGET_NAMES[method.key]} {method.label}",
                f"{daphne_ms:.2f}",
                f"{ceiling:.0f}",
                f"{ceiling / baseline.rate:.2f}x",
                f"{allowed_ms:.2f}",
                f"{result.rate / ceiling:.0%}",
            ]
        )
    return rows


def ceiling_reading(report: Report) -> str:
    parts = []
    for row in ceiling_rows(report)[1:]:
        name, daphne_ms, ceiling, versus, allowed, reached = row
        parts.append(
            f"{name}: daphne's {daphne_ms} ms CPU per instance cap one web process at {ceiling} "
            f"instances/s ({versus} the baseline; the target leaves {allowed} ms per instance), "
            f"the run reached {reached} of that."
        )
    if not parts:
        return ""
    return "Ceilings: " + " ".join(parts)


def target_lines(report: Report) -> list[str]:
    lines = []
    for row in target_rows(report)[1:]:
        name, measured, baseline, ratio, target, verdict = row
        lines.append(f"{verdict} {name}: {ratio} ({measured} vs {baseline}; target {target})")
    return lines


def reading(report: Report) -> str:
    n = report.instances
    parts = []
    orthanc, web = report.need("orthanc-wado"), report.need("adit-wado-web")
    getscu, get = report.need("getscu"), report.need("adit-wado-get")
    orthanc_stow, stow = report.need("orthanc-stow"), report.need("adit-stow")
    parts.append(
        f"Orthanc sends the study by WADO-RS in {orthanc.ms_per_instance:.2f} ms per instance "
        f"and getscu takes it by C-GET in {getscu.ms_per_instance:.2f} ms; through ADIT the "
        f"retrieval takes {web.ms_per_instance:.2f} ms from the WADO-RS source and "
        f"{get.ms_per_instance:.2f} ms from the C-GET source."
    )
    proxy = report.need("byte-proxy")
    proxy_ratio = report.ratio(proxy)
    if proxy_ratio is not None and proxy.cpu_daphne is not None:
        parts.append(
            f"The same web server passing Orthanc's answer through untouched (no part parsed, "
            f"no instance read) takes {proxy.ms_per_instance:.2f} ms per instance and "
            f"{1000 * proxy.cpu_daphne / n:.2f} ms of its CPU: {proxy_ratio:.2f}x Orthanc's own "
            "WADO-RS, the most that target (a) can reach with this web server on this machine."
        )
    for result, what in ((web, "from the WADO-RS source"), (get, "from the C-GET source")):
        if result.cpu_daphne is not None:
            parts.append(
                f"daphne burns {1000 * result.cpu_daphne / n:.2f} ms CPU per instance {what} "
                f"({100 * result.cpu_daphne / result.seconds:.0f}% of one core over the run), "
                f"the Orthancs {1000 * result.cpu_orthanc / n:.2f} ms, this client "
                f"{1000 * (result.cpu_client or 0) / n:.2f} ms."
            )
    parts.append(
        f"Orthanc stores the STOW-RS body in {orthanc_stow.ms_per_instance:.2f} ms per instance, "
        f"ADIT passes it on by C-STORE in {stow.ms_per_instance:.2f} ms"
        + (
            f" (daphne {1000 * stow.cpu_daphne / n:.2f} ms CPU per instance, the Orthancs "
            f"{1000 * stow.cpu_orthanc / n:.2f} ms)."
            if stow.cpu_daphne is not None
            else "."
        )
    )
    if stow.rise_mb is not None and stow.mib is not None:
        parts.append(
            f"During the STOW-RS daphne's peak rose {stow.rise_mb:.0f} MiB above its RSS before "
            f"the request (largest of the runs), against a body of {stow.mib:.0f} MiB."
        )
    for method, profile in zip(_profiled_methods(), report.profiles, strict=False):
        pieces = []
        for prefix, what, per_call in _PROFILE_PIECES[method.key]:
            seconds, calls = profile.cumulative(prefix)
            if not calls:
                continue
            if per_call:
                pieces.append(f"{what} {1000 * seconds / calls:.1f} ms x {calls}")
            else:
                pieces.append(f"{what} {seconds:.1f} s")
        parts.append(
            f"Under cProfile ({profile.label}: {profile.wall_seconds:.1f} s timed, "
            f"{profile.threads} threads; times inflated 2-3x; the warm-up included): "
            + ", ".join(pieces)
            + "."
        )
    parts.append(common.load_sentence(report) + ".")
    return " ".join(parts)


def format_markdown_section(report: Report) -> str:
    lines = [
        *common.section_head(
            report,
            f"DICOMweb API, N={report.instances} (and {report.small_instances}), "
            f"repeat={report.repeat}",
        ),
        f"- Run: `uv run cli bench dicomweb --instances {report.instances} --repeat "
        f"{report.repeat}`; medians.",
        f"- Study: {report.instances} CT instances, {ROWS}x{COLUMNS}, 16 bit, "
        f"{report.study_mib:.0f} MiB in Orthanc {SOURCE_AE}, and {report.small_instances} for "
        f"the memory comparison; uploaded by REST in {report.upload_seconds:.1f} s. STOW-RS: "
        f"one request of {report.instances} other instances of that size, read from a file, "
        f"to Orthanc {DESTINATION_AE} (cleared before each run).",
        "- ADIT: served by daphne on a throwaway database, a fresh daphne per round (warmed up "
        "with a 5-instance retrieval through each source and a 5-instance store), called with "
        f"a token. {WEB_AE} reaches {SOURCE_AE} by QIDO-RS + WADO-RS, {SOURCE_AE} by study-root "
        f"C-FIND + C-GET; {DESTINATION_AE} takes C-STORE. Client: `requests` streaming the "
        f"answer in {CHUNK_BYTES // 1024} KiB reads, ADIT's multipart reader, the SOP Instance "
        "UID of each part read from its file meta; `Accept: multipart/related; "
        'type="application/dicom"; transfer-syntax=*` for ADIT and Orthanc alike. getscu runs '
        "with `--ignore` (receives, stores nothing). Every run checked: every SOP Instance UID "
        "once (getscu: N instances received); after a STOW the destination holds exactly the "
        "study. daphne MiB: *RSS before* the timed request (median); *peak N/10* the VmHWM of "
        "a retrieval of the small study just before the timed one, *peak N* that of the timed "
        "run (each reset before its request; highest of the runs); *N vs N/10* the difference "
        "within a round (the largest).",
        "",
        common.markdown_table(result_rows(report)),
        "",
        common.markdown_table(target_rows(report)),
        "",
        common.markdown_table(ceiling_rows(report)),
        "",
        "Reading: " + reading(report) + " " + ceiling_reading(report),
        "",
    ]
    if report.failures:
        lines += [
            "Failed runs (not counted, each run again):",
            "",
            *[f"- {failure}" for failure in report.failures],
            "",
        ]
    for profile in report.profiles:
        lines += common.profile_details(
            profile,
            f"cProfile of daphne during one {profile.label} ({profile.wall_seconds:.1f} s "
            f"timed, {profile.threads} threads merged; start-up and warm-up included)",
            PROFILE_TOP,
        )
    return "\n".join(lines)


def _versions(source: OrthancServer) -> dict[str, str]:
    found = {**common.versions(source), **engine_versions()}
    for package in ("daphne", "twisted", "requests"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


# -- entry point ------------------------------------------------------------------------------


def run_dicomweb_benchmark(
    server: DatabaseServer,
    instances: int = 1000,
    repeat: int = 3,
    *,
    profile: bool = True,
    record: bool = True,
    echo: Echo = print,
) -> Report:
    """Runs the DICOMweb benchmark in a throwaway database; returns its report.

    Django must not be set up yet: this sets it up with the test settings on that database.

    Args:
        server: The PostgreSQL server to create the throwaway database on.
        instances: CT slices of the study retrieved and stored.
        repeat: Runs per method; the median counts.
        profile: Whether to add one run of each ADIT method by a daphne under cProfile.
        record: Whether to append the results to bench/RESULTS.md.
        echo: Where progress and results are printed.
    """
    if instances < SMALL_SHARE or repeat < 1:
        raise ValueError(f"instances must be at least {SMALL_SHARE}, repeat at least 1.")
    load_before = common.load_average()
    with common.terminate_as_interrupt():
        with bench_database(server), DicomWebBenchmark(instances, echo) as bench:
            bench.start()
            assert bench.source is not None
            results = [MethodResult(method, instances) for method in METHODS]
            failures: list[str] = []
            width = max(len(method.label) for method in METHODS)
            for round_number in range(1, repeat + 1):
                daphne = bench.new_daphne()
                try:
                    for result in results:
                        method = result.method
                        run = once_more_on_failure(
                            method.label,
                            functools.partial(
                                bench.measure, method, daphne if method.through_adit else None
                            ),
                            failures,
                            echo,
                        )
                        result.runs.append(run)
                        growth = run.growth_mb
                        echo(
                            f"[{round_number}/{repeat}] {method.label:<{width}} "
                            f"{run.seconds:6.2f} s {instances / run.seconds:6.0f} inst/s"
                            + (f", daphne peak {growth:+.0f} MiB over N/10" if growth else "")
                        )
                finally:
                    daphne.stop()
            report = Report(
                instances=instances,
                small_instances=bench.small_instances,
                repeat=repeat,
                study_mib=bench.studies["large"].mib,
                upload_seconds=bench.upload_seconds,
                machine=common.machine(),
                versions=_versions(bench.source),
                results=results,
                load_before=load_before,
                failures=failures,
            )
            if profile:
                for method in _profiled_methods():
                    echo(f"Profiling daphne during one {method.label} ...")
                    report.profiles.append(
                        once_more_on_failure(
                            f"profiled {method.label}",
                            functools.partial(bench.profile, method),
                            failures,
                            echo,
                        )
                    )
            report.load_after = common.load_average()
    echo("Dropped the throwaway database.")
    common.print_results(
        echo,
        common.console_table(result_rows(report))
        + "\n\n"
        + common.console_table(target_rows(report))
        + "\n\n"
        + common.console_table(ceiling_rows(report)),
        [
            *target_lines(report),
            *[f"Failed run (not counted): {failure}" for failure in report.failures],
        ],
        reading(report) + " " + ceiling_reading(report),
        section=(lambda: format_markdown_section(report)) if record else None,
        results_file=RESULTS_FILE,
    )
    return report


if __name__ == "__main__":
    sys.exit(_profiled_daphne(sys.argv[1:]))
