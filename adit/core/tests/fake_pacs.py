"""A PACS made with pynetdicom for the error paths a real Orthanc cannot be made to take: a
PACS that answers slowly, gives up mid-study, answers what no PACS should, or ignores a
C-CANCEL. Tests of anything a real PACS can do use the Orthanc fixtures instead.

Tests give it the handlers of the services it answers (pynetdicom's event handlers), so each
test says in one place what its PACS does differently::

    with FakePacs("SLOWPACS", get=answer_slowly) as pacs:
        server = pacs.server(study_root_get_support=True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,  # pyright: ignore[reportAttributeAccessIssue]
    StudyRootQueryRetrieveInformationModelGet,  # pyright: ignore[reportAttributeAccessIssue]
)

from adit.core.demo.orthanc import free_ports
from adit.core.dicom.dimse import discard_unfinished_instance
from adit.core.models import DicomServer

Handler = Callable[[Any], Any]


class FakePacs:
    """A study-root SCP on a free loopback port, answering with the handlers it is given.

    Args:
        ae_title: Its AE title (it answers to any called AE title).
        find: The EVT_C_FIND handler; C-FIND is offered only with one.
        get: The EVT_C_GET handler; C-GET is offered only with one, and then the C-STORE
            sub-operations of every storage SOP class in the uncompressed syntaxes.
        store: The EVT_C_STORE handler; C-STORE of CT images (explicit VR little endian)
            is offered only with one.
        more_handlers: Further (event, handler) pairs, e.g. EVT_ACCEPTED to count associations.
        max_associations: How many associations it serves at once.
    """

    def __init__(
        self,
        ae_title: str,
        *,
        find: Handler | None = None,
        get: Handler | None = None,
        store: Handler | None = None,
        more_handlers: list[tuple[Any, Handler]] | None = None,
        max_associations: int = 10,
    ):
        self.ae_title = ae_title
        (self.port,) = free_ports(1)
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_associations = max_associations
        handlers = list(more_handlers or [])
        if find is not None:
            self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
            handlers.append((evt.EVT_C_FIND, find))
        if get is not None:
            self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
            for context in StoragePresentationContexts:
                assert context.abstract_syntax is not None
                self.ae.add_supported_context(
                    context.abstract_syntax, scp_role=True, scu_role=False
                )
            handlers.append((evt.EVT_C_GET, get))
        if store is not None:
            self.ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
            handlers.append((evt.EVT_C_STORE, store))
            # pynetdicom leaves the file of an instance cut off by a hang-up behind.
            handlers.append(
                (evt.EVT_CONN_CLOSE, lambda event: discard_unfinished_instance(event.assoc))
            )
        self.handlers: list = handlers
        self._server = None

    def __enter__(self) -> FakePacs:
        self._server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=self.handlers
        )
        assert self._server is not None
        return self

    def __exit__(self, *exc_info) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def server(self, name: str = "", save: bool = True, **fields: Any) -> DicomServer:
        """ADIT's server row for this PACS, with the given further fields (capability flags
        such as ``study_root_get_support=True``, ``max_associations``); saved unless ``save``
        is False."""
        row = DicomServer(
            name=name or self.ae_title,
            ae_title=self.ae_title,
            host="127.0.0.1",
            port=self.port,
            **fields,
        )
        if save:
            row.save()
        return row


def fake_ct_instance(
    study_uid: str,
    series_uid: str,
    number: int,
    *,
    sop_uid: str = "",
    patient_id: str = "FAKE1",
    pixel_bytes: int = 0,
) -> Dataset:
    """A small CT instance for a fake PACS to send: numbered from 1, with ``pixel_bytes``
    bytes of pixel data (none when 0) so tests can make instances as large as they need."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = sop_uid or generate_uid()
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.PatientID = patient_id
    dataset.Modality = "CT"
    dataset.InstanceNumber = number
    if pixel_bytes:
        dataset.Rows = 1
        dataset.Columns = pixel_bytes // 2
        dataset.BitsAllocated = dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.SamplesPerPixel = 1
        dataset.PixelRepresentation = 0
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.PixelData = bytes([number % 256]) * (dataset.Columns * 2)
    return dataset
