"""What the fetch and the transfer benchmark share.

The error they raise, the session's temporary folder and clean-up, the figures every method's
runs give (median seconds, rate, Orthanc CPU), the facts about the machine and the software
they record, CPU and memory readings of processes, cProfile in every thread and its summary
(each benchmark passes the functions that explain its runs), the tables and the Markdown pieces
of a section in ``bench/RESULTS.md``, and printing and appending the results.
"""

from __future__ import annotations

import contextlib
import cProfile
import datetime
import io
import logging
import os
import platform
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

if TYPE_CHECKING:
    from adit.core.demo.orthanc import OrthancServer

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_PREAMBLE = (
    "# Benchmark results\n\nAppended by `uv run cli bench ...`; newest last. "
    "README.md says what the columns mean.\n"
)

GETSCU = "/usr/bin/getscu"  # dcmtk's C-GET SCU; its version is recorded as dcmtk's

Echo = Callable[[str], None]


class BenchmarkError(RuntimeError):
    """A run failed or delivered the wrong number of instances."""


class Session:
    """The temporary folder of one benchmark session and what is to be undone at its end.

    A context manager: leaving it undoes everything registered on ``_stack`` (stopping servers,
    restoring settings), last first, and removes the folder, also on Ctrl-C.
    """

    def __init__(self, prefix: str):
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self._stack = contextlib.ExitStack()
        self._stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()


# -- results -------------------------------------------------------------------------------------


class TimedRun(Protocol):
    """What every run records: its wall time and the CPU time of the Orthancs meanwhile."""

    @property
    def seconds(self) -> float: ...

    @property
    def cpu_orthanc(self) -> float: ...


class KeyedMethod(Protocol):
    @property
    def key(self) -> str: ...


MethodT = TypeVar("MethodT", bound=KeyedMethod)
RunT = TypeVar("RunT", bound=TimedRun)


@dataclass
class MethodResultBase(Generic[MethodT, RunT]):
    """All runs of one method and the figures derived from them."""

    method: MethodT
    instances: int
    runs: list[RunT] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    @property
    def ms_per_instance(self) -> float:
        return 1000 * self.seconds / self.instances

    @property
    def cpu_orthanc(self) -> float:
        return statistics.median(run.cpu_orthanc for run in self.runs)

    def median_of(self, name: str) -> float | None:
        """The median of a figure of the runs, those without it left out (None if none)."""
        known = [value for run in self.runs if (value := getattr(run, name)) is not None]
        return statistics.median(known) if known else None

    def maximum_of(self, name: str) -> float | None:
        """The highest of a figure of the runs: memory is judged by the worst run."""
        known = [value for run in self.runs if (value := getattr(run, name)) is not None]
        return max(known) if known else None


ResultT = TypeVar("ResultT", bound=MethodResultBase[Any, Any])


class ResultsByKey(Generic[ResultT]):
    """A report's results, looked up by the key of their method."""

    results: list[ResultT]

    def result(self, key: str) -> ResultT | None:
        return next((result for result in self.results if result.method.key == key), None)

    def need(self, key: str) -> ResultT:
        result = self.result(key)
        if result is None:
            raise KeyError(key)
        return result


# -- process measurements ----------------------------------------------------------------------


def process_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of another process (all its threads), 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    # After the command name: state is field 3 of stat(5); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_high_water_mark(pid: int | str = "self") -> bool:
    """Resets the kernel's RSS high-water mark (VmHWM, which getrusage's ru_maxrss reports).

    Writing 5 to clear_refs (Linux >= 4.0) makes the high-water mark the peak from now on (for
    this process, ru_maxrss never reports less than the RSS the process had before it exec'd
    Python, a few MB). Returns False where that is not allowed; the mark then stays the peak
    since the start.
    """
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def load_average() -> float:
    return os.getloadavg()[0]


# -- what the results are recorded with ----------------------------------------------------------


def machine() -> dict[str, str]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "arch": platform.machine(),
        "cpu": cpu_model,
        "ram": ram,
        "kernel": platform.release(),
    }


def versions(orthanc: OrthancServer) -> dict[str, str]:
    """Python, the DICOM libraries, dcmtk and the version of ``orthanc``."""
    found = {"python": platform.python_version()}
    for package in ("pydicom", "pynetdicom", "dicomweb-client"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        output = subprocess.run(
            [GETSCU, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        match = re.search(r"v(\d+\.\d+\.\d+)", output)
        if match:
            found["dcmtk"] = match.group(1)
    with contextlib.suppress(Exception):
        found["orthanc"] = str(orthanc.rest("GET", "/system")["Version"])
    return found


# -- running -------------------------------------------------------------------------------------


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turns SIGTERM into KeyboardInterrupt, so that a killed benchmark cleans up too."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Hides the informational lines of the logger ``name``; its warnings still show."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


# -- profiles ------------------------------------------------------------------------------------


class ThreadProfiler:
    """cProfile in this thread and in every thread started while the context is active.

    cProfile alone sees only the thread that enables it. Every thread started meanwhile gets a
    profiler of its own; ``stats`` merges them all.
    """

    def __init__(self) -> None:
        self._main = cProfile.Profile()
        self._profilers: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_profiling(self, frame: Any, event: str, arg: Any) -> None:
        # The first event of a new thread replaces this hook by a profiler of its own.
        profiler = cProfile.Profile()
        with self._lock:
            self._profilers.append(profiler)
        profiler.enable()

    def __enter__(self) -> ThreadProfiler:
        threading.setprofile(self._start_profiling)
        self._main.enable()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._main.disable()
        threading.setprofile(None)  # pyright: ignore[reportArgumentType]

    @property
    def threads(self) -> int:
        """The threads profiled, this one included."""
        with self._lock:
            return len(self._profilers) + 1

    def stats(self) -> pstats.Stats:
        """The statistics of all threads, merged."""
        stats = pstats.Stats(self._main)
        with self._lock:
            for profiler in self._profilers:
                stats.add(profiler)
        return stats


@dataclass(frozen=True)
class ProfileSummary:
    """What cProfile saw in one run, all threads merged."""

    label: str
    instances: int
    wall_seconds: float
    threads: int
    categories: list[tuple[str, float]]  # self time by category, seconds
    key_functions: list[tuple[str, float, int]]  # (what, cumulative seconds, calls)
    top_cumulative: str
    top_self: str

    def cumulative(self, what_prefix: str) -> tuple[float, int]:
        """Cumulative seconds and calls of the key function whose description starts so."""
        for what, seconds, calls in self.key_functions:
            if what.startswith(what_prefix):
                return seconds, calls
        return 0.0, 0


# (what, end of the file name, function name) of a function whose cumulative time explains a run.
KeyFunction = tuple[str, str, str]

# Self time of these built-ins is time spent waiting, not working.
_WAIT_NAMES = ("acquire", "sleep", "select", "poll", "wait", "join")
_SOCKET_NAMES = ("recv", "send", "_socket")
_FILE_NAMES = ("_io.BufferedWriter", "_io.FileIO", "io.open", "posix.", "write'")
WAITING = "waiting (locks, select, sleep)"


def category(filename: str, function: str) -> str:
    """What a function's self time is spent on, by its file and name."""
    if filename == "~":  # a built-in
        if any(name in function for name in _WAIT_NAMES):
            return WAITING
        if any(name in function for name in _SOCKET_NAMES):
            return "socket I/O"
        if any(name in function for name in _FILE_NAMES):
            return "file I/O"
        return "other built-ins"
    for package in ("pydicom", "pynetdicom", "adit", "dicomweb_client", "requests", "urllib3"):
        if f"/{package}/" in filename:
            return f"{package} code"
    if filename.endswith(("/threading.py", "/queue.py")):
        return "threading and queue hand-offs"
    return "other Python code"


def summarize_profile(
    label: str,
    instances: int,
    stats: pstats.Stats,
    wall: float,
    threads: int,
    *,
    key_functions: list[KeyFunction],
    top: int,
) -> ProfileSummary:
    """Self time by category, the cumulative time of ``key_functions`` and the ``top`` lines
    by cumulative and by self time. Strips the directories from ``stats``."""
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # pyright: ignore[reportAttributeAccessIssue]
    categories: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in raw.items():
        name = category(filename, function)
        categories[name] = categories.get(name, 0.0) + own
    found = []
    for what, file_end, function in key_functions:
        cumulative = 0.0
        calls = 0
        for (filename, _line, name), (_cc, nc, _own, cum, _callers) in raw.items():
            if name == function and filename.endswith(file_end):
                cumulative += cum
                calls += nc
        if calls:
            found.append((what, cumulative, calls))
    stats.strip_dirs()
    return ProfileSummary(
        label=label,
        instances=instances,
        wall_seconds=wall,
        threads=threads,
        categories=sorted(categories.items(), key=lambda item: -item[1]),
        key_functions=found,
        top_cumulative=top_lines(stats, "cumulative", top),
        top_self=top_lines(stats, "tottime", top),
    )


def top_lines(stats: pstats.Stats, order: str, top: int) -> str:
    """The ``top`` lines of ``stats`` in ``order``, without pstats' preamble."""
    buffer = io.StringIO()
    stats.stream = buffer  # pyright: ignore[reportAttributeAccessIssue]
    stats.sort_stats(order).print_stats(top)
    lines = buffer.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return "\n".join(line.rstrip() for line in lines[start:] if line.strip())


# -- reporting -----------------------------------------------------------------------------------


def number(value: float | None, digits: int = 0, sign: bool = False) -> str:
    """``value`` with ``digits`` decimals (and its sign), "-" for None."""
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def console_table(rows: list[list[str]]) -> str:
    """``rows`` (the header first) as aligned columns, the first left, the others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row_number, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if row_number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    """``rows`` (the header first) as a Markdown table, the columns after the first right."""
    lines = ["| " + " | ".join(rows[0]) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(rows[0]))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


class Recorded(Protocol):
    """What every report records besides its figures."""

    started: datetime.datetime
    machine: dict[str, str]
    versions: dict[str, str]
    load_before: float
    load_after: float


def section_head(report: Recorded, title: str) -> list[str]:
    """The heading of a section, dated, and its Machine and Software items."""
    machine = report.machine
    software = ", ".join(f"{name} {version}" for name, version in report.versions.items())
    return [
        f"## {report.started:%Y-%m-%d %H:%M %Z}: {title}",
        "",
        f"- Machine: {machine['nproc']} CPUs (nproc), {machine['arch']}, {machine['cpu']}, "
        f"{machine['ram']} RAM, Linux {machine['kernel']}; load average "
        f"{report.load_before:.2f} before, {report.load_after:.2f} after.",
        f"- Software: {software}.",
    ]


def load_sentence(report: Recorded) -> str:
    """The load average before and after the runs, for a reading; without the full stop."""
    return (
        f"Load average (1 min) was {report.load_before:.2f} before and "
        f"{report.load_after:.2f} after the runs"
    )


def profile_details(profile: ProfileSummary, summary: str, top: int) -> list[str]:
    """A folded block of a section with what ``profile`` saw, ``summary`` as its title."""
    return [
        f"<details><summary>{summary}</summary>",
        "",
        "Self time by category (s): "
        + ", ".join(f"{name} {seconds:.2f}" for name, seconds in profile.categories)
        + ".",
        "",
        "Cumulative time of key functions (s, calls): "
        + "; ".join(f"{what} {cum:.2f} ({calls})" for what, cum, calls in profile.key_functions)
        + ".",
        "",
        f"Top {top} by cumulative time:",
        "",
        "```",
        profile.top_cumulative,
        "```",
        "",
        f"Top {top} by self time:",
        "",
        "```",
        profile.top_self,
        "```",
        "",
        "</details>",
        "",
    ]


def append_section(section: str, path: Path = RESULTS_FILE) -> None:
    """Appends ``section`` to the results file, which is created if it does not exist."""
    if not path.exists():
        path.write_text(RESULTS_PREAMBLE)
    with path.open("a") as results:
        results.write("\n" + section)


def print_results(
    echo: Echo,
    table: str,
    lines: list[str],
    reading: str,
    *,
    section: Callable[[], str] | None,
    results_file: Path,
) -> None:
    """Prints the table, the verdict ``lines`` and the reading; appends ``section()`` if given."""
    echo("")
    echo(table)
    echo("")
    for line in lines:
        echo(line)
    echo("")
    echo("Reading: " + reading)
    if section is not None:
        append_section(section(), results_file)
        echo(f"\nAppended the results to {results_file}.")
