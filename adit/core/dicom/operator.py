"""DicomOperator: the one way every ADIT app queries, fetches and stores DICOM data.

It picks the protocol from what the server supports (DIMSE or DICOMweb), validates queries,
filters what a PACS may not filter itself, retries transient failures, and makes sure a fetch
either delivers every instance or says exactly which ones are missing.
"""

from __future__ import annotations

import contextvars
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import cached_property, partial
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import stamina
from django.conf import settings
from pydicom import Dataset

from adit.core import validators
from adit.core.dicom import spool
from adit.core.dicom.dicomweb import DicomWebConnector, DicomWebPeer
from adit.core.dicom.dimse import (
    GET_CLASSES_WITH_EVERY_SYNTAX,
    DimseConnector,
    DimsePeer,
    DimseTimeouts,
    FindSession,
    RetrieveResult,
    StoreResult,
)
from adit.core.dicom.errors import (
    AssociationLimitError,
    DicomError,
    IncompleteFetchError,
    RetriableDicomError,
    ServiceStoppingError,
)
from adit.core.dicom.files import read_instance
from adit.core.dicom.query import RETURN_KEYS, Level, Query, as_list, count_of

if TYPE_CHECKING:
    from adit.core.models import DicomServer

logger = logging.getLogger(__name__)

T = TypeVar("T")
# With ``answer_within``: how many answers a query that filters them itself (patients from
# studies, a modality the PACS may ignore) reads at most per result it may return.
ANSWERS_PER_RESULT_FOR_A_PERSON = 10
InstanceCallback = Callable[[Dataset], None]
# SeriesInstanceUID -> how many instances the series has.
SeriesCounts = dict[str, int]


class Answers(Iterator[Dataset]):
    """The matches of one query, read as they arrive."""

    def __init__(self) -> None:
        self.matches: Iterator[Dataset] = iter(())
        # Set once read to the end: the PACS's answers were not all read (see find()).
        self.cut_short = False

    def __next__(self) -> Dataset:
        return next(self.matches)

    def close(self) -> None:
        """Stops reading: the query is cancelled and its association freed at once, as when a
        generator of the answers is closed."""
        close = getattr(self.matches, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    protocol: str
    message: str
    round_trip_seconds: float | None = None


class DicomOperator:
    """Every DICOM operation ADIT performs on a server, whichever protocol it speaks.

    Args:
        answer_within: For a person waiting at a page: every step (connecting, waiting for
            one of the server's association slots, each answer) gets at most this many
            seconds, and a transient failure is not tried again. None: the settings' timeouts
            and retries, for the work of a worker.
    """

    def __init__(self, server: DicomServer, *, answer_within: float | None = None):
        self.server = server
        self.answer_within = answer_within
        if answer_within is None:
            timeouts = DimseTimeouts(
                connection=settings.DICOM_CONNECTION_TIMEOUT,
                acse=settings.DICOM_ACSE_TIMEOUT,
                dimse=settings.DICOM_DIMSE_TIMEOUT,
                network=settings.DICOM_NETWORK_TIMEOUT,
            )
        else:
            timeouts = DimseTimeouts(answer_within, answer_within, answer_within, answer_within)
        self.dimse = DimseConnector(
            DimsePeer(server.name, server.ae_title, server.host, server.port or 0),
            calling_ae=settings.CALLING_AE_TITLE,
            timeouts=timeouts,
            # Each association holds one of the server's slots: at most its
            # max_associations are open at once, over all of ADIT's workers.
            slot=self._association_slot,
        )

    def _association_slot(self) -> AbstractContextManager[object]:
        return self.server.association_slot(wait_seconds=self.answer_within)

    @cached_property
    def dicomweb(self) -> DicomWebConnector:
        server = self.server
        return DicomWebConnector(
            DicomWebPeer(
                name=server.name,
                root_url=server.dicomweb_root_url,
                qido_prefix=server.dicomweb_qido_prefix,
                wado_prefix=server.dicomweb_wado_prefix,
                stow_prefix=server.dicomweb_stow_prefix,
                authorization=server.dicomweb_authorization_header,
            ),
            timeout=self.answer_within or settings.DICOMWEB_TIMEOUT,
        )

    # -- retries ----------------------------------------------------------------------------

    def _retry_context(self, retry_on: Callable[[Exception], bool] | None = None):
        """Attempts of one operation: transient failures are tried again with exponential
        backoff, as long as ``retry_on`` (if given) agrees."""

        def is_transient(error: Exception) -> bool:
            if not isinstance(error, RetriableDicomError):
                return False
            if isinstance(error, ServiceStoppingError):
                return False  # ADIT's own service stopped: the task resumes when it runs
            if isinstance(error, AssociationLimitError):
                return False  # it waited long enough already: the task runs again later
            if retry_on is not None and not retry_on(error):
                return False
            logger.warning("Trying again after a transient failure: %s", error)
            return True

        return stamina.retry_context(
            on=is_transient,
            attempts=settings.DICOM_RETRY_ATTEMPTS if self.answer_within is None else 1,
            timeout=None,
            wait_initial=0.5,
            wait_max=10,
        )

    def _retrying(self, function: Callable[[], T]) -> T:
        for attempt in self._retry_context():
            with attempt:
                return function()
        raise AssertionError("stamina either returns or raises")

    def _retrying_stream(self, start: Callable[[], Iterable[T]]) -> Iterator[T]:
        """Streams the results of ``start()``; starts over after a transient failure only as
        long as nothing was handed out yet (a half-delivered answer cannot be taken back)."""
        delivered = False

        def nothing_delivered_yet(error: Exception) -> bool:
            return not delivered

        for attempt in self._retry_context(retry_on=nothing_delivered_yet):
            with attempt:
                for item in start():
                    delivered = True
                    yield item
                return

    # -- connection check -------------------------------------------------------------------

    def check_connection(self) -> ConnectionCheck:
        """C-ECHO, or a QIDO probe for a DICOMweb-only server; never raises for network errors."""
        server = self.server
        if server.supports_dimse:
            protocol = "C-ECHO"
            probe = self.dimse.echo
        elif server.dicomweb_root_url:
            protocol = "QIDO-RS"
            probe = self.dicomweb.probe
        else:
            return ConnectionCheck(False, "none", f"{server.name} has neither host nor DICOMweb.")
        try:
            seconds = probe()
        except DicomError as err:
            return ConnectionCheck(False, protocol, str(err))
        return ConnectionCheck(
            True, protocol, f"{protocol} succeeded in {seconds * 1000:.0f} ms.", seconds
        )

    # -- queries ----------------------------------------------------------------------------

    @contextmanager
    def query_session(self) -> Iterator[FindSession]:
        """Within the block, the C-FINDs of this operator share one association, reopened
        when the PACS closes it (an idle timeout, a restart): a batch of hundreds of queries
        costs one association instead of one each. QIDO-RS keeps its HTTP connections anyway.

        Example::

            with operator.query_session():
                for query in queries:
                    results = list(operator.find(query))
        """
        with self.dimse.find_session() as session:
            yield session

    def find(self, query: Query, limit: int | None = None) -> Answers:
        """Matches of ``query``, filtered by what the PACS may have ignored, at most ``limit``.

        Once read, the answers tell whether a person's query stopped reading the PACS's
        answers before their end (``cut_short``): then the PACS may hold more matches.
        """
        answers = Answers()
        answers.matches = self._matches(query, limit, answers)
        return answers

    def _matches(self, query: Query, limit: int | None, answers: Answers) -> Iterator[Dataset]:
        found = 0
        seen_patients: set[str] = set()
        # A client-side filter may drop answers, so the PACS may not stop at the limit.
        pacs_limit = limit if not query.modalities and query.level != Level.PATIENT else None
        bounded_for_a_person = (
            pacs_limit is None and limit is not None and self.answer_within is not None
        )
        if bounded_for_a_person:
            # A person waits: a bounded number of answers to filter, not the whole PACS.
            assert limit is not None
            pacs_limit = limit * ANSWERS_PER_RESULT_FOR_A_PERSON
        read = 0
        for dataset in self._find_raw(query, pacs_limit):
            read += 1
            if not query.matches(dataset):
                continue
            if query.level == Level.PATIENT:
                # Emulated patient queries (study level) answer once per study.
                patient_id = str(dataset.get("PatientID", ""))
                if patient_id in seen_patients:
                    continue
                seen_patients.add(patient_id)
            _strip_padding(dataset)
            yield dataset
            found += 1
            if limit is not None and found >= limit:
                return
        answers.cut_short = bounded_for_a_person and read >= (pacs_limit or 0)

    def _find_raw(self, query: Query, pacs_limit: int | None) -> Iterator[Dataset]:
        server = self.server
        root = self._find_root(query)
        if root is not None:
            dimse_query = query
            if root == "study" and query.level == Level.PATIENT:
                dimse_query = Query(Level.STUDY, query.filters, query.modalities)
            yield from self._retrying_stream(
                lambda: self.dimse.find(dimse_query.to_dataset(), root, pacs_limit)
            )
            return
        if server.dicomweb_qido_support:
            fields = (*RETURN_KEYS[query.level], *query.include)
            yield from self._retrying_stream(
                lambda: self.dicomweb.search(
                    query.level.value, query.qido_filters(), fields, pacs_limit
                )
            )
            return
        raise DicomError(
            f"{server.name} cannot be searched: it supports neither C-FIND nor QIDO-RS "
            "for this query."
        )

    def _find_root(self, query: Query) -> str | None:
        server = self.server
        if query.level == Level.PATIENT and server.patient_root_find_support:
            return "patient"
        if server.study_root_find_support:
            return "study"
        if server.patient_root_find_support:
            # Patient root needs the patient named exactly below patient level (PS3.4 C.6.1).
            if query.level == Level.PATIENT or query.has_exact("PatientID"):
                return "patient"
            if not server.dicomweb_qido_support:
                raise DicomError(
                    f"{server.name} only supports patient root queries, which need an exact "
                    "Patient ID for a search of studies, series or images."
                )
        return None

    def find_studies(self, limit: int | None = None, **filters) -> Answers:
        return self.find(Query.create(Level.STUDY, **filters), limit)

    def find_series(self, study_uid: str, **filters) -> Answers:
        return self.find(Query.create(Level.SERIES, StudyInstanceUID=study_uid, **filters))

    def find_images(self, study_uid: str, series_uid: str, **filters) -> Answers:
        query = Query.create(
            Level.IMAGE, StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, **filters
        )
        return self.find(query)

    # -- fetching ---------------------------------------------------------------------------

    def fetch_study(
        self,
        patient_id: str,
        study_uid: str,
        callback: InstanceCallback,
        expected: SeriesCounts | None = None,
        *,
        spool_above: int | None = None,
    ) -> int:
        """Delivers every instance of the study to ``callback``; returns how many.

        Args:
            expected: How many instances each series has, as the server said; asked here
                when None. A fetch that delivers fewer raises instead of returning.
            spool_above: Instances larger than this many bytes go to disk as they arrive and
                reach ``callback`` with their large values deferred (see ``spool``), instead
                of being decoded in memory; None: every instance in memory.

        Raises:
            RetriableDicomError: If some instances did not arrive (the error says how many),
                or the server could not be reached.
            DicomError: If the server cannot fetch or refused the fetch.
        """
        return self._fetch(patient_id, study_uid, None, None, callback, expected, spool_above)

    def fetch_series(
        self,
        patient_id: str,
        study_uid: str,
        series_uid: str,
        callback: InstanceCallback,
        expected: SeriesCounts | None = None,
        *,
        spool_above: int | None = None,
    ) -> int:
        return self._fetch(patient_id, study_uid, series_uid, None, callback, expected, spool_above)

    def fetch_image(
        self,
        patient_id: str,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        callback: InstanceCallback,
        *,
        spool_above: int | None = None,
    ) -> int:
        return self._fetch(
            patient_id, study_uid, series_uid, sop_uid, callback, {series_uid: 1}, spool_above
        )

    def count_instances(
        self, patient_id: str, study_uid: str, series_uids: Iterable[str] | None = None
    ) -> SeriesCounts | None:
        """How many instances the server holds in each series of the study (or of the given
        series), or None if the server cannot be asked.

        Raises:
            DicomError: If one of ``series_uids`` is not in the study, or the query failed.
        """
        if not self.can_list_study(patient_id):
            return None
        counts = {
            str(series.SeriesInstanceUID): int(series.NumberOfSeriesRelatedInstances)
            for series in self.find_counted_series(patient_id, study_uid)
        }
        if series_uids is None:
            return counts
        wanted = list(series_uids)
        missing = [uid for uid in wanted if uid not in counts]
        if missing:
            raise DicomError(f"No series found with Series Instance UID {', '.join(missing)}.")
        return {uid: counts[uid] for uid in wanted}

    def can_list_study(self, patient_id: str) -> bool:
        """Whether the server can be asked what a study holds (series and instances)."""
        server = self.server
        return bool(
            server.study_root_find_support
            or (server.patient_root_find_support and patient_id)
            or server.dicomweb_qido_support
        )

    def find_counted_series(self, patient_id: str, study_uid: str) -> list[Dataset]:
        """The series of the study, each with NumberOfSeriesRelatedInstances: as the server
        counts them, or listed instance by instance where it does not count."""
        filters = {"PatientID": patient_id} if patient_id else {}
        series = list(self.find(Query.create(Level.SERIES, StudyInstanceUID=study_uid, **filters)))
        for item in series:
            count = count_of(item, "NumberOfSeriesRelatedInstances")
            if count is None:  # not counted (or not readably): list them
                uid = str(item.SeriesInstanceUID)
                count = len(self.expected_instances(patient_id, study_uid, uid))
            item.NumberOfSeriesRelatedInstances = count
        return series

    def _fetch(
        self,
        patient_id: str,
        study_uid: str,
        series_uid: str | None,
        sop_uid: str | None,
        callback: InstanceCallback,
        expected: SeriesCounts | None,
        spool_above: int | None = None,
    ) -> int:
        if expected is None:
            expected = self.count_instances(
                patient_id, study_uid, [series_uid] if series_uid else None
            )
            if expected is None:
                logger.warning(
                    "%s cannot be queried: whether a fetch of %s is complete goes unchecked.",
                    self.server.name,
                    study_uid,
                )
        arrivals = _Arrivals(callback, spool_above)
        try:
            self._fetch_with_any(
                patient_id, study_uid, series_uid, sop_uid, arrivals, expected or None
            )
        except IncompleteFetchError:
            raise
        except DicomError as err:
            if expected and arrivals.is_short(expected):
                # Say what the failure cost: the instances that did not arrive.
                raise type(err)(f"{err} {arrivals.shortfall(expected)}") from err
            raise
        return arrivals.total

    def _fetch_with_any(
        self,
        patient_id: str,
        study_uid: str,
        series_uid: str | None,
        sop_uid: str | None,
        arrivals: _Arrivals,
        expected: SeriesCounts | None,
    ) -> None:
        server = self.server
        level = Level.IMAGE if sop_uid else Level.SERIES if series_uid else Level.STUDY
        if server.dicomweb_wado_support:
            method = "WADO-RS"
            fetch = partial(self._fetch_with_wado, study_uid, series_uid, sop_uid, arrivals)
        elif root := self._retrieve_root(
            server.study_root_get_support, server.patient_root_get_support, patient_id
        ):
            method = "C-GET"
            identifier = _retrieve_identifier(level, patient_id, study_uid, series_uid, sop_uid)
            fetch = partial(self._fetch_with_get, identifier, root, expected, arrivals)
        elif root := self._retrieve_root(
            server.study_root_move_support, server.patient_root_move_support, patient_id
        ):
            method = "C-MOVE"
            identifier = _retrieve_identifier(level, patient_id, study_uid, series_uid, sop_uid)
            instances = self.expected_instances(patient_id, study_uid, series_uid, sop_uid)
            fetch = partial(self._fetch_with_move, identifier, root, study_uid, instances, arrivals)
        else:
            raise DicomError(
                f"{server.name} offers no way to fetch: enable WADO-RS, C-GET or C-MOVE for it."
            )

        def complete_fetch() -> None:
            fetch()
            if expected and arrivals.is_short(expected):
                # Nothing failed on the way, yet the server holds more than it sent: a
                # response cut short that looked complete must never pass as the study.
                raise IncompleteFetchError(
                    f"{method} from {server.name} ended early. {arrivals.shortfall(expected)}"
                )

        self._retrying(complete_fetch)

    @staticmethod
    def _retrieve_root(study_root: bool, patient_root: bool, patient_id: str) -> str | None:
        if study_root:
            return "study"
        if patient_root and patient_id:
            return "patient"
        return None

    def _study_sop_classes(self, patient_id: str, study_uid: str) -> list[str] | None:
        """The SOP classes of the study as the PACS computes them (SOPClassesInStudy), or None
        if it does not say."""
        filters = {"PatientID": patient_id} if patient_id else {}
        query = Query.create(Level.STUDY, StudyInstanceUID=study_uid, **filters)
        root = self._find_root(query) if self.server.supports_dimse else None
        if root is None:
            return None
        dataset = query.to_dataset()
        dataset.SOPClassesInStudy = ""
        try:
            # Read to the end, not stopped (aborted) at the first answer: the final response
            # would then reach pynetdicom's reactor and show as "Received unexpected C-FIND
            # service message" in every fetch's log. A study UID matches one study.
            answers = list(self._retrying_stream(lambda: self.dimse.find(dataset, root)))
        except DicomError as err:
            logger.warning(
                "Could not ask %s for the SOP classes of %s: %s", self.server.name, study_uid, err
            )
            return None
        classes = as_list(answers[0].get("SOPClassesInStudy")) if answers else []
        return sorted({uid for uid in classes if validators.is_valid_uid(uid)}) or None

    def _series_sop_classes(self, patient_id: str, study_uid: str, series_uid: str) -> list[str]:
        """The SOP classes of one series, instance by instance; empty if the PACS cannot say."""
        filters = {"PatientID": patient_id} if patient_id else {}
        query = Query.create(
            Level.IMAGE, StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, **filters
        )
        try:
            classes = {str(image.get("SOPClassUID", "")) for image in self.find(query)}
        except DicomError as err:
            logger.warning(
                "Could not ask %s for the SOP classes of %s: %s", self.server.name, series_uid, err
            )
            return []
        return sorted(uid for uid in classes if validators.is_valid_uid(uid))

    def _fetch_with_wado(
        self,
        study_uid: str,
        series_uid: str | None,
        sop_uid: str | None,
        arrivals: _Arrivals,
    ) -> None:
        retrieved = self.dicomweb.retrieve(
            study_uid, series_uid, sop_uid, spool_above=arrivals.spool_above
        )
        for dataset in retrieved:
            arrivals.deliver(dataset)  # again after a retry: skipped

    def _fetch_with_get(
        self,
        identifier: Dataset,
        root: str,
        expected: SeriesCounts | None,
        arrivals: _Arrivals,
    ) -> None:
        """C-GET, with a storage context for every SOP class of the study in every transfer
        syntax: in one C-GET when the study's classes leave room for that, else series by
        series (a series mostly holds one class)."""
        patient_id = str(identifier.get("PatientID", ""))
        study_uid = str(identifier.StudyInstanceUID)
        if identifier.QueryRetrieveLevel != Level.STUDY.value:
            series_uid = str(identifier.SeriesInstanceUID)
            classes = self._series_sop_classes(patient_id, study_uid, series_uid)
            self._get(identifier, root, classes, arrivals)
            return
        classes = self._study_sop_classes(patient_id, study_uid)
        if classes is not None and len(classes) <= GET_CLASSES_WITH_EVERY_SYNTAX:
            self._get(identifier, root, classes, arrivals)
            return
        series_uids = (
            list(expected)
            if expected
            else [
                str(series.SeriesInstanceUID)
                for series in self.find_series(
                    study_uid, **({"PatientID": patient_id} if patient_id else {})
                )
            ]
        )
        for series_uid in series_uids:
            if expected and arrivals.per_series.get(series_uid, 0) >= expected[series_uid]:
                continue  # complete already (an earlier try of this fetch)
            series_identifier = _retrieve_identifier(
                Level.SERIES, patient_id, study_uid, series_uid, None
            )
            classes = self._series_sop_classes(patient_id, study_uid, series_uid)
            self._get(series_identifier, root, classes, arrivals)

    def _get(
        self, identifier: Dataset, root: str, sop_classes: list[str], arrivals: _Arrivals
    ) -> None:
        result = self.dimse.get(
            identifier, root, arrivals.deliver, sop_classes, spool_above=arrivals.spool_above
        )
        if result.failed:
            raise RetriableDicomError(
                f"C-GET from {self.server.name}: {result.failed} instance(s) failed "
                f"({', '.join(result.failed_instances[:5]) or 'UIDs not reported'})."
            )

    def _fetch_with_move(
        self,
        identifier: Dataset,
        root: str,
        study_uid: str,
        expected: dict[str, str],
        arrivals: _Arrivals,
    ) -> None:
        from adit.core.dicom.file_channel import MAX_MESSAGE_ID, FileChannelClient

        if not expected:
            return
        channel = FileChannelClient(settings.FILE_CHANNEL_HOST, settings.FILE_CHANNEL_PORT)
        series_filter = sorted(set(expected.values())) if "SeriesInstanceUID" in identifier else ()
        # A Message ID of its own lets the receiver tell this C-MOVE's copies from those of
        # an overlapping fetch, where the PACS names it in its C-STOREs.
        message_id = secrets.randbelow(MAX_MESSAGE_ID) + 1
        with channel.subscribe(
            self.server.ae_title, study_uid, series_filter, message_id
        ) as subscription:
            move_done = threading.Event()
            move_errors: list[BaseException] = []

            def move() -> None:
                try:
                    self.dimse.move(
                        identifier, root, settings.RECEIVER_AE_TITLE, message_id=message_id
                    )
                except BaseException as err:  # reported on the receiving thread
                    move_errors.append(err)
                finally:
                    move_done.set()

            # In this thread's context, which may hold the slot reserved for the C-MOVE.
            mover = threading.Thread(
                target=contextvars.copy_context().run, args=(move,), name="c-move", daemon=True
            )
            mover.start()
            quiet_deadline = None
            while not arrivals.has_all(expected):
                received = subscription.receive(timeout=0.5, file_above=arrivals.spool_above)
                if received is not None:
                    if received.sop_instance_uid in expected:
                        arrivals.deliver_encoded(received.sop_instance_uid, received.data)
                    # Let go of its bytes before the next one arrives: not two at once.
                    received = None
                    continue
                if move_done.is_set():
                    if move_errors:  # the PACS gave up; nothing more will come
                        break
                    quiet_deadline = quiet_deadline or (
                        time.monotonic() + (self.answer_within or settings.C_MOVE_QUIET_TIMEOUT)
                    )
                    if time.monotonic() > quiet_deadline:
                        break
            mover.join(timeout=self.answer_within or settings.DICOM_DIMSE_TIMEOUT)
            refused_callers = dict(subscription.refused_callers)
        missing = sorted(set(expected) - arrivals.uids)
        if missing and refused_callers:
            callers = ", ".join(
                f"{count} from {caller!s}" for caller, count in sorted(refused_callers.items())
            )
            # A configuration error: trying again would only fail the same way.
            raise DicomError(
                f"C-MOVE from {self.server.name}: {len(missing)} of {len(expected)} instance(s) "
                f"did not arrive because ADIT's receiver refused them ({callers}): the PACS "
                f"sends with another AE title than the {self.server.ae_title} under which "
                f"{self.server.name} is registered in ADIT. Register the server with the AE "
                "title its PACS calls with, or set the PACS to call with the registered one."
            )
        if missing:
            reason = f" The PACS reported: {move_errors[0]}" if move_errors else ""
            shown = ", ".join(missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            arrived = len(expected) - len(missing)
            raise IncompleteFetchError(
                f"C-MOVE from {self.server.name}: only {arrived} of the {len(expected)} "
                f"instance(s) it holds arrived, {len(missing)} missing: {shown}{more}.{reason}"
            )

    def expected_instances(
        self,
        patient_id: str,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> dict[str, str]:
        """SOPInstanceUID -> SeriesInstanceUID of every instance of the study (or of one series,
        or one instance), listed instance by instance: what a fetch must deliver."""
        if series_uid:
            series_uids = [series_uid]
        else:
            series_uids = [
                str(series.SeriesInstanceUID)
                for series in self.find(
                    Query.create(Level.SERIES, PatientID=patient_id, StudyInstanceUID=study_uid)
                )
            ]
        expected: dict[str, str] = {}
        for uid in series_uids:
            query = Query.create(
                Level.IMAGE,
                PatientID=patient_id,
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=uid,
                SOPInstanceUID=sop_uid or "",
            )
            for image in self.find(query):
                expected[str(image.SOPInstanceUID)] = uid
        return expected

    # -- moving straight to another node ----------------------------------------------------

    def move_to(
        self,
        destination_ae: str,
        patient_id: str,
        study_uid: str,
        series_uid: str | None,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Asks the server to C-MOVE the study (or one series) to ``destination_ae`` itself,
        so no instance passes through ADIT; returns how many it moved.

        ``on_progress`` gets the number moved so far after every pending response; an
        exception it raises stops the move. Whether everything arrived is for the caller to
        check at the destination: the server's counts are its own view.
        """
        server = self.server
        root = self._retrieve_root(
            server.study_root_move_support, server.patient_root_move_support, patient_id
        )
        if root is None:
            raise DicomError(f"{server.name} does not support C-MOVE.")
        level = Level.SERIES if series_uid else Level.STUDY
        identifier = _retrieve_identifier(level, patient_id, study_uid, series_uid, None)

        def report(result: RetrieveResult) -> None:
            if on_progress is not None:
                on_progress(result.completed + result.warning)

        def run() -> RetrieveResult:
            result = self.dimse.move(identifier, root, destination_ae, on_pending=report)
            if result.failed:
                raise RetriableDicomError(
                    f"C-MOVE from {server.name} to {destination_ae}: {result.failed} "
                    f"instance(s) failed "
                    f"({', '.join(result.failed_instances[:5]) or 'UIDs not reported'})."
                )
            return result

        try:
            result = self._retrying(run)
        except RetriableDicomError:
            raise
        except DicomError as err:
            raise DicomError(
                f"{err} The study was to go to {destination_ae}: check that {server.name} knows "
                "this AE title (with host and port) as a move destination."
            ) from err
        return result.completed + result.warning

    # -- storing ----------------------------------------------------------------------------

    def store(self, datasets: Iterable[Dataset], result: StoreResult | None = None) -> StoreResult:
        """Stores the datasets (C-STORE on one association, else STOW-RS), each in its own
        transfer syntax where the server accepts it; see ``DimseConnector.store``, also for
        what ``result`` tells after an error (STOW-RS counts a batch once it was stored)."""
        result = result if result is not None else StoreResult()
        if self.server.store_scp_support:
            return self.dimse.store(datasets, result)
        if self.server.dicomweb_stow_support:

            def count(stored: int) -> None:
                result.stored += stored

            self.dicomweb.store(datasets, on_stored=count)
            return result
        raise DicomError(f"{self.server.name} cannot receive data: enable C-STORE or STOW-RS.")


def _retrieve_identifier(
    level: Level, patient_id: str, study_uid: str, series_uid: str | None, sop_uid: str | None
) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level.value
    if patient_id:
        identifier.PatientID = patient_id
    identifier.StudyInstanceUID = study_uid
    if series_uid:
        identifier.SeriesInstanceUID = series_uid
    if sop_uid:
        identifier.SOPInstanceUID = sop_uid
    return identifier


def _strip_padding(dataset: Dataset) -> None:
    # Some PACS pad values to an even length with a space (seen with Orthanc's PatientID).
    for key in ("PatientID", "AccessionNumber"):
        if key in dataset and isinstance(dataset.get(key), str):
            setattr(dataset, key, dataset.get(key).strip())


class _Arrivals:
    """The instances a fetch delivered so far, each handed to the callback once (a retried
    fetch sends some again), counted per series for the comparison with the server's counts."""

    def __init__(self, callback: InstanceCallback, spool_above: int | None = None):
        self.callback = callback
        self.spool_above = spool_above
        self.uids: set[str] = set()
        self.per_series: dict[str, int] = {}

    @property
    def total(self) -> int:
        return len(self.uids)

    def deliver(self, dataset: Dataset) -> None:
        uid = str(dataset.get("SOPInstanceUID", ""))
        if uid in self.uids:
            return
        self.callback(dataset)
        self.uids.add(uid)
        series_uid = str(dataset.get("SeriesInstanceUID", ""))
        self.per_series[series_uid] = self.per_series.get(series_uid, 0) + 1

    def deliver_encoded(self, sop_uid: str, data: bytes | bytearray | BinaryIO) -> None:
        """Hands over a DICOM file's instance: its bytes, or a file (an instance larger than
        ``spool_above``, which stays there and which the dataset then owns)."""
        if sop_uid in self.uids:
            if not isinstance(data, bytes | bytearray):
                data.close()
            return
        if isinstance(data, bytes | bytearray):
            self.deliver(read_instance(data))  # its bytes kept: sent on as they came
        else:
            self.deliver(spool.spooled_file(data))  # never read whole

    def is_short(self, expected: SeriesCounts) -> bool:
        """Whether some series has fewer instances than the server holds; compared series by
        series, so that instances of one series cannot hide missing ones of another."""
        return any(self.per_series.get(uid, 0) < count for uid, count in expected.items())

    def has_all(self, expected: dict[str, str]) -> bool:
        return len(self.uids) >= len(expected) and self.uids.issuperset(expected)

    def shortfall(self, expected: SeriesCounts) -> str:
        """What is missing, in words: "Only 102 of the 300 instances … arrived …"."""
        wanted = sum(expected.values())
        short = [
            f"series {uid}: {self.per_series.get(uid, 0)} of {count}"
            for uid, count in expected.items()
            if self.per_series.get(uid, 0) < count
        ]
        more = f" and {len(short) - 3} more series" if len(short) > 3 else ""
        return (
            f"Only {self.total} of the {wanted} instance(s) it holds arrived, "
            f"{wanted - self.total} missing ({'; '.join(short[:3])}{more})."
        )
