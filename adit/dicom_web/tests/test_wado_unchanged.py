"""WADO-RS through ADIT sends each instance it does not change as the PACS sent it: the data
set of every part is the PACS's byte for byte — a Patient ID of odd length, private elements,
a JPEG 2000 image — and is not encoded again on the way, from a C-GET and a WADO-RS source."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from adit.core.dicom.files import read_instance
from adit.core.tests.factories import grant, server_for
from adit.core.tests.odd_instances import (
    ODD_ELEMENT,
    ODD_PRIVATE_ELEMENT,
    data_set_of,
    odd_study,
    sent_by_c_get,
)

from .test_wado import get, parts_of

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.mark.parametrize("kind", ["c-get", "dicomweb"])
def test_unchanged_instances_are_the_parts_as_the_pacs_sent_them(
    client, api_user, empty_orthanc2, kind, monkeypatch
):
    files = odd_study()
    empty_orthanc2.upload(files)
    study_uid = str(read_instance(files[0]).StudyInstanceUID)
    stored_files = empty_orthanc2.study_files(study_uid)
    stored = {str(read_instance(file).SOPInstanceUID): file for file in stored_files}
    # WADO-RS sends the stored files; by C-GET Orthanc sends them re-encoded.
    sent = (
        {uid: data_set_of(file) for uid, file in stored.items()}
        if kind == "dicomweb"
        else sent_by_c_get(empty_orthanc2, study_uid, stored_files)
    )
    server = server_for(empty_orthanc2, name=kind, kind=kind, ae_title=f"ODD{kind.upper()[:6]}")
    grant(server, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
    save_as = Dataset.save_as

    def guarded_save_as(self, *args, **kwargs):
        assert "PixelData" not in self, "an unchanged instance was encoded again"
        return save_as(self, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_as", guarded_save_as)

    parts = parts_of(get(client, api_user, server, f"studies/{study_uid}", accept=AS_STORED))

    assert len(parts) == len(stored)
    for part in parts:
        uid = str(read_instance(part.body).SOPInstanceUID)
        syntax = str(read_instance(stored[uid]).file_meta.TransferSyntaxUID)
        assert part.content_type == f"application/dicom; transfer-syntax={syntax}"
        assert data_set_of(part.body) == sent[uid]
        if kind == "dicomweb":
            assert ODD_ELEMENT in part.body
            assert ODD_PRIVATE_ELEMENT in part.body
