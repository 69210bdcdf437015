"""A C-GET its consumer stops (a canceled job, a destination that failed) makes the PACS stop
sending at once, instead of sending the rest of the study only to have each instance
refused: for a large study that took minutes, during which a cancel looked ignored.

The PACS is a pynetdicom C-GET SCP of the test, which counts what it sent: one that honours
the C-CANCEL ADIT sends, and one that ignores it and is stopped at its next pending response.
"""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from adit.core.dicom.dimse import DimseConnector, DimsePeer
from adit.core.tests.fake_pacs import FakePacs, fake_ct_instance

STUDY_UID = generate_uid()
SERIES_UID = generate_uid()
INSTANCES = 40
FAIL_AT = 3


class Sender:
    """A C-GET handler sending the study's instances, counting them."""

    def __init__(self, honours_cancel: bool):
        self.honours_cancel = honours_cancel
        self.sent = 0

    def __call__(self, event):
        yield INSTANCES
        for number in range(1, INSTANCES + 1):
            if self.honours_cancel and event.is_cancelled:
                yield 0xFE00, None
                return
            self.sent += 1
            yield 0xFF00, fake_ct_instance(STUDY_UID, SERIES_UID, number, pixel_bytes=4096)


class DestinationFailed(Exception):
    pass


@pytest.mark.parametrize("honours_cancel", [True, False], ids=["cancel-honoured", "ignored"])
def test_a_consumer_that_fails_stops_the_pacs_sending(honours_cancel):
    sender = Sender(honours_cancel)
    received = []

    def consume(dataset: Dataset) -> None:
        received.append(dataset.SOPInstanceUID)
        if len(received) == FAIL_AT:
            raise DestinationFailed("the destination refused the instance")

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = STUDY_UID
    with FakePacs("STOPPACS", get=sender) as pacs:
        connector = DimseConnector(
            DimsePeer("Stop PACS", pacs.ae_title, "127.0.0.1", pacs.port), "ADIT"
        )
        with pytest.raises(DestinationFailed):
            connector.get(query, "study", consume, sop_classes=[CTImageStorage])

    assert len(received) == FAIL_AT
    # The instance on its way when the cancel arrived may still be sent, nothing more.
    assert sender.sent <= FAIL_AT + 2, f"the PACS sent {sender.sent} of {INSTANCES}"
