"""WADO-RS frames through ADIT, as a viewer fetches images: dicomweb-client's
retrieve_instance_frames gets from ADIT what it gets from the Orthanc behind it directly, for
single- and multi-frame images in every common transfer syntax, from a C-GET and a WADO-RS
source; a client taking only uncompressed frames gets compressed ones decoded without loss;
bad frame lists and frames that do not exist are clean errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from adit.core.demo.orthanc import OrthancServer
from adit.core.demo.sample_studies import multiframe_study, syntax_study
from adit.core.dicom.multipart import boundary_of, iter_parts
from adit.core.dicom.syntaxes import syntax_of
from adit.core.tests.factories import grant, server_for

from .conftest import adit_client, api_root, orthanc_client

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MULTIFRAME = multiframe_study()  # 16 frames, uncompressed, RLE and JPEG 2000 lossless
SYNTAXES = syntax_study(seed=7)  # one image in each common transfer syntax
FRAMES = int(MULTIFRAME[0].NumberOfFrames)
# What a viewer asks for: the frames in any transfer syntax, as stored.
AS_STORED = (("application/octet-stream", "*"),)


@pytest.fixture(scope="module")
def image_pacs(tmp_path_factory) -> Iterator[OrthancServer]:
    orthanc = OrthancServer("FRAMEPACS", storage_dir=tmp_path_factory.mktemp("frames"))
    with orthanc:
        orthanc.upload([*MULTIFRAME, *SYNTAXES])
        yield orthanc


@pytest.fixture(params=["c-get", "dicomweb"])
def source(request, api_user, image_pacs):
    kind = request.param
    ae_title = "FRAMEPACSWEB" if kind == "dicomweb" else image_pacs.ae_title
    server = server_for(image_pacs, name=f"Frames ({kind})", kind=kind, ae_title=ae_title)
    grant(server, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
    return server


def _uids(dataset: Dataset) -> tuple[str, str, str]:
    return (
        str(dataset.StudyInstanceUID),
        str(dataset.SeriesInstanceUID),
        str(dataset.SOPInstanceUID),
    )


def test_frames_as_stored_are_what_orthanc_sends(adit_http, api_user, source, image_pacs):
    adit = adit_client(adit_http.url, source, api_user, prefixed=source.ae_title.endswith("WEB"))
    orthanc = orthanc_client(image_pacs)
    for dataset in [*MULTIFRAME, *SYNTAXES]:
        count = int(dataset.get("NumberOfFrames", 1))
        # In the order asked for, back and forth, one twice.
        numbers = [count, 2, 2, 1, 3] if count > 1 else [1]
        ours = adit.retrieve_instance_frames(
            *_uids(dataset), frame_numbers=numbers, media_types=AS_STORED
        )
        # Orthanc answers one frame per request only.
        theirs = [
            frame
            for number in numbers
            for frame in orthanc.retrieve_instance_frames(
                *_uids(dataset), frame_numbers=[number], media_types=AS_STORED
            )
        ]

        assert len(ours) == len(numbers), syntax_of(dataset).name
        assert ours == theirs, f"frames {numbers} of the {syntax_of(dataset).name} image"


def test_a_client_taking_only_uncompressed_frames_gets_them_decoded_without_loss(
    adit_http, api_user, source
):
    root = api_root(adit_http.url, source)
    uncompressed, *compressed = MULTIFRAME

    def frames(dataset: Dataset, accept: str) -> list[tuple[str, bytes]]:
        response = requests.get(
            f"{root}/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
            f"/instances/{dataset.SOPInstanceUID}/frames/3,{FRAMES}",
            headers={**api_user.headers, "Accept": accept},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        parts = iter_parts(iter([response.content]), boundary_of(response.headers["Content-Type"]))
        return [(part.content_type, part.body) for part in parts]

    octet_stream = 'multipart/related; type="application/octet-stream"'
    expected = frames(uncompressed, octet_stream)
    assert [content_type for content_type, _ in expected] == [
        f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    ] * 2
    frame_bytes = uncompressed.Rows * uncompressed.Columns * 2
    assert expected[0][1] == uncompressed.PixelData[2 * frame_bytes : 3 * frame_bytes]
    for dataset in compressed:
        assert frames(dataset, octet_stream) == expected, syntax_of(dataset).name
        # As stored when the client takes that: the media type of its compression.
        (content_type, _), _ = frames(dataset, 'multipart/related; type="*/*"')
        assert content_type.endswith(f"transfer-syntax={syntax_of(dataset)}")


@pytest.mark.parametrize(
    "frame_list, status, words",
    [
        ("0", 400, "frame numbers counted from 1"),
        ("1,x", 400, "not a comma-separated list"),
        ("17", 404, "has 16 frame(s); frame 17 does not exist"),
        ("1,99", 404, "frame 99 does not exist"),
    ],
)
def test_a_frame_list_that_names_no_frame_of_the_instance_is_a_clean_error(
    adit_http, api_user, source, frame_list, status, words
):
    dataset = MULTIFRAME[0]
    response = requests.get(
        f"{api_root(adit_http.url, source)}/studies/{dataset.StudyInstanceUID}/series/"
        f"{dataset.SeriesInstanceUID}/instances/{dataset.SOPInstanceUID}/frames/{frame_list}",
        headers=api_user.headers,
        timeout=60,
    )

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert words in response.json()["detail"]


def test_a_client_taking_only_another_compression_is_told_what_it_could_take(
    adit_http, api_user, source
):
    dataset = MULTIFRAME[0]  # uncompressed: ADIT never encodes
    response = requests.get(
        f"{api_root(adit_http.url, source)}/studies/{dataset.StudyInstanceUID}/series/"
        f"{dataset.SeriesInstanceUID}/instances/{dataset.SOPInstanceUID}/frames/1",
        headers={**api_user.headers, "Accept": 'multipart/related; type="image/jp2"'},
        timeout=60,
    )

    assert response.status_code == 406
    assert "never encodes" in response.json()["detail"]
