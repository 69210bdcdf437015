"""Real Orthanc PACS servers run as child processes, for the tests and the demo mode.

Debian's Orthanc 1.10 (``/usr/sbin/Orthanc CONFIG.json``) with its DICOMweb plugin is started
from a generated configuration in a folder of its own, and driven through its REST API. Facts
this module relies on (measured on Debian 12, see the project's PACS notes):

* Orthanc 1.10 has no bind-address option; it listens on all interfaces. ``RemoteAccessAllowed``
  false makes its HTTP server refuse non-loopback clients, and every client here connects to
  127.0.0.1. DICOM has no such filter.
* DCMTK, inside Orthanc and in its command line tools, keeps Nagle's algorithm on unless
  ``TCP_NODELAY=1`` is in the environment; every C-STORE then stalls about 40 ms on a delayed
  ACK. Orthanc always gets that variable here.
* C-FIND, C-GET and C-MOVE from calling AE titles Orthanc does not know are refused unless the
  ``DicomAlwaysAllow*`` options allow them; known modalities are checked against their own
  ``Allow*`` flags instead. Both are set from the same switches, so a server built with
  ``allow_get=False`` refuses C-GET from everybody: Orthanc accepts the association and aborts
  it when the C-GET request arrives.
* Orthanc answers C-FIND in its ``DefaultEncoding``. The stock Latin-1 silently drops letters
  outside Latin-1 (``Zieliński`` comes back as ``Zieliski``), so the default here is UTF-8
  (answers in ISO_IR 192).
"""

from __future__ import annotations

import atexit
import ctypes
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pydicom
from pydicom.dataset import Dataset

from adit.system_packages import ensure_commands

ORTHANC_EXECUTABLE = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DICOMWEB_PATH = "/dicom-web/"
LOOPBACK = "127.0.0.1"

# Commands the harness and the tests that use it need, each with its Debian package. dcmtk is
# named by its absolute path because pynetdicom puts Python tools of the same names (findscu,
# movescu, ...) into the virtualenv, which comes first on PATH under "uv run".
REQUIRED_COMMANDS = {
    ORTHANC_EXECUTABLE: "orthanc",
    DICOMWEB_PLUGIN: "orthanc-dicomweb",
    "/usr/bin/findscu": "dcmtk",
}

# Orthanc's switches for the transfer syntaxes its C-STORE accepts beside uncompressed ones.
_COMPRESSED_SYNTAX_SWITCHES = (
    "DeflatedTransferSyntaxAccepted",
    "JpegTransferSyntaxAccepted",
    "Jpeg2000TransferSyntaxAccepted",
    "JpegLosslessTransferSyntaxAccepted",
    "JpipTransferSyntaxAccepted",
    "Mpeg2TransferSyntaxAccepted",
    "Mpeg4TransferSyntaxAccepted",
    "H265TransferSyntaxAccepted",
    "RleTransferSyntaxAccepted",
)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_LOG_TAIL_LINES = 25

DicomSource = str | os.PathLike[str] | bytes | Dataset


class OrthancError(RuntimeError):
    """Orthanc answered a REST call with an error, or could not be reached."""


class OrthancStartError(OrthancError):
    """An Orthanc process did not come up; the message carries the tail of its log."""


@dataclass(frozen=True)
class UploadSummary:
    """What Orthanc said about uploaded instances."""

    stored: int
    already_stored: int

    @property
    def total(self) -> int:
        return self.stored + self.already_stored


def free_ports(count: int = 1) -> list[int]:
    """Returns ``count`` distinct TCP ports that are free on every interface right now.

    All sockets stay open until every port is chosen, so the kernel cannot hand out one port
    twice. Orthanc binds all interfaces, hence the check on 0.0.0.0 and not only on loopback.
    Another process may still take a port before it is used; the window is short.
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class OrthancClient:
    """The parts of Orthanc's REST API the harness needs, for any running Orthanc."""

    def __init__(self, url: str, name: str = "Orthanc") -> None:
        """Points the client at one Orthanc.

        Args:
            url: Base URL of the REST API, e.g. ``http://127.0.0.1:6501``.
            name: How error messages call this server.
        """
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"Expected an http:// URL for {name}, got {url!r}.")
        self.url = url.rstrip("/")
        self.name = name
        self._host = parts.hostname
        self._port = parts.port or 80
        self._path_prefix = parts.path.rstrip("/")

    def add_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        """Adds or replaces a DICOM modality while Orthanc runs (kept in memory only)."""
        self._json(
            "PUT", f"/modalities/{quote(name, safe='')}", self._modality_entry(ae_title, host, port)
        )

    def remove_modality(self, name: str) -> None:
        """Removes a DICOM modality while Orthanc runs."""
        self._json("DELETE", f"/modalities/{quote(name, safe='')}")

    def upload(self, items: Iterable[DicomSource]) -> UploadSummary:
        """Stores DICOM instances through REST ``POST /instances``, one request each.

        ``items`` may be file paths, folders (every file below them is sent), encoded DICOM
        files or pydicom datasets (which need file meta information). Items are consumed one by
        one, so a generator of large datasets is never held in memory at once. Instances that
        are already stored are counted, not duplicated.
        """
        stored = already_stored = 0
        # One keep-alive connection for all instances; a new one per instance costs more than
        # storing a small instance.
        connection = self._connection(timeout=60.0)
        try:
            for encoded in _encoded_instances(items):
                answer = self._request(
                    "POST",
                    "/instances",
                    encoded,
                    content_type="application/dicom",
                    connection=connection,
                )
                if json.loads(answer).get("Status") == "AlreadyStored":
                    already_stored += 1
                else:
                    stored += 1
        finally:
            connection.close()
        return UploadSummary(stored=stored, already_stored=already_stored)

    def clear(self) -> None:
        """Deletes every patient, and with them all studies, series and instances."""
        for patient_id in self._json("GET", "/patients"):
            self._json("DELETE", f"/patients/{patient_id}")

    def count_instances(self) -> int:
        return int(self._json("GET", "/statistics")["CountInstances"])

    def list_study_uids(self) -> list[str]:
        """The StudyInstanceUIDs of all stored studies, sorted."""
        studies = self._json("GET", "/studies?expand")
        return sorted(study["MainDicomTags"]["StudyInstanceUID"] for study in studies)

    def study_instance_uids(self, study_uid: str) -> list[str]:
        """The SOPInstanceUIDs stored for one study, sorted (empty for an unknown study)."""
        query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
        instances = self._json("POST", "/tools/find", query)
        return sorted(instance["MainDicomTags"]["SOPInstanceUID"] for instance in instances)

    def study_files(self, study_uid: str) -> list[bytes]:
        """Every instance of one study as Orthanc stored it (DICOM files, in no set order)."""
        query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}
        return [
            self._request("GET", f"/instances/{orthanc_id}/file", content_type="application/dicom")
            for orthanc_id in self._json("POST", "/tools/find", query)
        ]

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        """Calls any REST route with a JSON body (or none) and returns the decoded answer."""
        return self._json(method, path, body)

    def _modality_entry(self, ae_title: str, host: str, port: int) -> dict[str, Any]:
        return {"AET": ae_title, "Host": host, "Port": port}

    def _json(self, method: str, path: str, body: Any = None, *, timeout: float = 60.0) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        answer = self._request(
            method, path, payload, content_type="application/json", timeout=timeout
        )
        return json.loads(answer) if answer.strip() else None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str,
        connection: http.client.HTTPConnection | None = None,
        timeout: float = 60.0,
    ) -> bytes:
        own_connection = connection is None
        if connection is None:
            connection = self._connection(timeout)
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            try:
                connection.request(method, self._path_prefix + path, body=body, headers=headers)
                response = connection.getresponse()
            except ConnectionError:
                if own_connection:
                    raise
                # Orthanc closes idle keep-alive connections after a second or so; a reused
                # connection may be dead. Only idempotent calls share connections (POST
                # /instances answers AlreadyStored the second time), so sending again is safe.
                connection.close()
                connection.request(method, self._path_prefix + path, body=body, headers=headers)
                response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise OrthancError(
                f"{self.name} at {self.url}: {method} {path} failed: {error}"
            ) from error
        finally:
            if own_connection:
                connection.close()
        if response.status >= 400:
            detail = answer[:500].decode(errors="replace")
            raise OrthancError(
                f"{self.name} at {self.url}: {method} {path} answered {response.status}: {detail}"
            )
        return answer


class OrthancServer(OrthancClient):
    """One Orthanc PACS run as a child process from a configuration generated in ``storage_dir``.

    The folder holds ``orthanc.json``, the log ``orthanc.log`` and the database and files in
    ``db/``. Reusing a folder keeps the stored studies across restarts. The REST methods of
    ``OrthancClient`` talk to this server.

    Typical use::

        with OrthancServer("ORTHANC1", storage_dir=tmp / "orthanc1") as server:
            server.upload(generate_studies(seed=42))
            print(server.dicom_port, server.dicomweb_root)
    """

    def __init__(
        self,
        ae_title: str,
        *,
        storage_dir: str | os.PathLike[str],
        dicom_port: int | None = None,
        http_port: int | None = None,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        check_called_aet: bool = False,
        dicomweb: bool = True,
        allow_find: bool = True,
        allow_get: bool = True,
        allow_move: bool = True,
        allow_store: bool = True,
        default_encoding: str = "Utf8",
        fsync: bool = False,
        accept_compressed: bool = True,
        start_timeout: float = 20.0,
        stop_with_parent: bool = True,
    ) -> None:
        """Describes the server; nothing runs before ``start()``.

        Args:
            ae_title: The AE title Orthanc answers to and calls others with.
            storage_dir: Folder for the configuration, the log and the stored data.
            dicom_port: DICOM port; a free one when None.
            http_port: REST and DICOMweb port; a free one when None.
            modalities: The DicomModalities: name -> (AE title, host, port). They are the
                possible C-MOVE destinations and the callers checked against the allow flags.
            check_called_aet: Whether Orthanc refuses associations addressed to another AE title.
            dicomweb: Whether to load the DICOMweb plugin (at ``dicomweb_root``).
            allow_find: Whether C-FIND is answered.
            allow_get: Whether C-GET is answered (False makes a "C-MOVE only" PACS).
            allow_move: Whether C-MOVE is answered.
            allow_store: Whether C-STORE from any caller is accepted.
            default_encoding: Orthanc's DefaultEncoding, the character set of C-FIND answers
                ("Utf8", "Latin1", ...).
            fsync: Whether Orthanc syncs every stored file to disk (slower, like a real PACS).
            accept_compressed: Whether C-STORE accepts compressed and deflated transfer
                syntaxes; False makes a PACS that takes uncompressed data only.
            start_timeout: Seconds ``start()`` waits for the REST API to answer.
            stop_with_parent: Whether the kernel sends Orthanc SIGTERM when the thread that
                started it ends (Linux PR_SET_PDEATHSIG), so a killed test run leaves no
                Orthanc behind. Pass False when starting from a short-lived thread.
        """
        if dicom_port is None or http_port is None:
            first, second = free_ports(2)
            dicom_port = first if dicom_port is None else dicom_port
            http_port = second if http_port is None else http_port
        super().__init__(f"http://{LOOPBACK}:{http_port}", name=f"Orthanc {ae_title}")
        self.ae_title = ae_title
        self.storage_dir = Path(storage_dir).resolve()
        self.dicom_port = dicom_port
        self.http_port = http_port
        self.check_called_aet = check_called_aet
        self.dicomweb = dicomweb
        self.allow_find = allow_find
        self.allow_get = allow_get
        self.allow_move = allow_move
        self.allow_store = allow_store
        self.default_encoding = default_encoding
        self.fsync = fsync
        self.accept_compressed = accept_compressed
        self.start_timeout = start_timeout
        self.stop_with_parent = stop_with_parent
        self._modalities = dict(modalities or {})
        # A unique name lets start() tell its own Orthanc from another one on the same port.
        self._instance_name = f"{ae_title} {uuid.uuid4().hex[:12]}"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def dicomweb_root(self) -> str:
        """Base URL of the DICOMweb API without a trailing slash, e.g. ``…:8042/dicom-web``."""
        return self.url + DICOMWEB_PATH.rstrip("/")

    @property
    def config_path(self) -> Path:
        return self.storage_dir / "orthanc.json"

    @property
    def log_path(self) -> Path:
        return self.storage_dir / "orthanc.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def modalities(self) -> dict[str, tuple[str, str, int]]:
        """The modalities of the configuration plus those added at run time."""
        return dict(self._modalities)

    def add_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        super().add_modality(name, ae_title, host, port)
        self._modalities[name] = (ae_title, host, port)

    def remove_modality(self, name: str) -> None:
        super().remove_modality(name)
        self._modalities.pop(name, None)

    def start(self) -> None:
        """Writes the configuration, starts Orthanc and waits until its REST API answers.

        Raises:
            MissingSystemPackage: Orthanc or dcmtk is missing and cannot be installed.
            OrthancStartError: Orthanc exited or did not answer within ``start_timeout``.
        """
        if self.is_running:
            raise OrthancError(f"{self.name} is already running (pid {self.pid}).")
        ensure_commands(REQUIRED_COMMANDS)
        (self.storage_dir / "db").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self._configuration(), indent=2))
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [ORTHANC_EXECUTABLE, str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.storage_dir,
                env={**os.environ, "TCP_NODELAY": "1"},
                preexec_fn=parent_death_signal() if self.stop_with_parent else None,
            )
        atexit.register(self.stop)
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stops Orthanc with SIGTERM, or SIGKILL after ``timeout`` seconds. Idempotent.

        A clean shutdown of Orthanc 1.10 takes 2-4 s; ``stop_servers`` stops several at once.
        """
        stop_servers([self], timeout)

    def kill(self) -> None:
        """Ends Orthanc at once with SIGKILL, as a crash would; ``start()`` brings it back with
        what it had stored."""
        process = self._detach_process()
        if process is not None:
            process.kill()
            process.wait()

    def _detach_process(self) -> subprocess.Popen[bytes] | None:
        process, self._process = self._process, None
        if process is not None:
            atexit.unregister(self.stop)
        return process

    def __enter__(self) -> OrthancServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return (
            f"<OrthancServer {self.ae_title} dicom {self.dicom_port} http {self.http_port} {state}>"
        )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of Orthanc's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    def _wait_until_up(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            exit_code = self._process.poll()
            if exit_code is not None:
                raise OrthancStartError(
                    f"{self.name} (DICOM port {self.dicom_port}, HTTP port {self.http_port}) "
                    f"exited with code {exit_code} while starting{self._logged_errors()}.\n"
                    f"Last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if self._answers_as_itself():
                return
            if time.monotonic() > deadline:
                raise OrthancStartError(
                    f"{self.name} did not answer on {self.url}/system within "
                    f"{self.start_timeout:g} s{self._logged_errors()}.\n"
                    f"Last lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _answers_as_itself(self) -> bool:
        try:
            system = self._json("GET", "/system", timeout=1.0)
        except (OrthancError, ValueError):
            return False
        return system.get("Name") == self._instance_name

    def _logged_errors(self) -> str:
        """The first error lines of the log (Orthanc starts them with "E"), or ""."""
        errors = [line for line in self.log_tail(200).splitlines() if line.startswith("E")]
        return ": " + " | ".join(errors[:3]) if errors else ""

    def _configuration(self) -> dict[str, Any]:
        configuration: dict[str, Any] = {
            "Name": self._instance_name,
            "StorageDirectory": str(self.storage_dir / "db"),
            "IndexDirectory": str(self.storage_dir / "db"),
            "StorageCompression": False,
            "SyncStorageArea": self.fsync,
            "OverwriteInstances": False,
            "Plugins": [DICOMWEB_PLUGIN] if self.dicomweb else [],
            "ConcurrentJobs": 2,
            "SaveJobs": False,
            "StableAge": 5,
            "DefaultEncoding": self.default_encoding,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpCompressionEnabled": False,
            "WebDavEnabled": False,
            "ExecuteLuaEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": self.check_called_aet,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": self.allow_store,
            "DicomAlwaysAllowFind": self.allow_find,
            "DicomAlwaysAllowGet": self.allow_get,
            "DicomAlwaysAllowMove": self.allow_move,
            "DicomModalitiesInDatabase": False,
            "DicomModalities": {
                name: self._modality_entry(*address) for name, address in self._modalities.items()
            },
            "UnknownSopClassAccepted": True,
            "DicomAssociationCloseDelay": 0,
            "SynchronousCMove": True,
            "StorageAccessOnFind": "Always",
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
        }
        for key in _COMPRESSED_SYNTAX_SWITCHES:
            configuration[key] = self.accept_compressed
        if self.dicomweb:
            # No "Host": Orthanc then builds the URLs in its answers from the request's Host
            # header, which is right for any port.
            configuration["DicomWeb"] = {
                "Enable": True,
                "Root": DICOMWEB_PATH,
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Ssl": False,
            }
        return configuration

    def _modality_entry(self, ae_title: str, host: str, port: int) -> dict[str, Any]:
        # A known caller is judged by these flags, not by DicomAlwaysAllow*; keeping both in step
        # makes allow_get=False refuse C-GET from every caller.
        return {
            **super()._modality_entry(ae_title, host, port),
            "AllowEcho": True,
            "AllowStore": self.allow_store,
            "AllowFind": self.allow_find,
            "AllowGet": self.allow_get,
            "AllowMove": self.allow_move,
        }


def stop_servers(servers: Iterable[OrthancServer], timeout: float = 10.0) -> None:
    """Stops servers in parallel: SIGTERM to all, then waiting, then SIGKILL to stragglers."""
    processes = [process for server in servers if (process := server._detach_process())]
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _encoded_instances(items: Iterable[DicomSource]) -> Iterable[bytes]:
    for item in items:
        if isinstance(item, bytes):
            yield item
        elif isinstance(item, Dataset):
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, item, enforce_file_format=True)
            yield buffer.getvalue()
        else:
            path = Path(item)
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                yield file.read_bytes()


def parent_death_signal():
    """A preexec function that asks the kernel for SIGTERM when the parent thread ends."""
    # libc is loaded here, in the parent: the child runs only the prctl call between fork and
    # exec, where loading libraries is not safe.
    libc = ctypes.CDLL(None, use_errno=True)

    def setparent_death_signal() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return setparent_death_signal
