"""Previews: real images of every kind pydicom ships (uncompressed, RLE, JPEG, JPEG-LS,
JPEG 2000; gray, RGB, YBR, palette; multi-frame), images made here for what those lack, and
hostile headers. Series previews come from a real Orthanc through each way of fetching."""

from __future__ import annotations

import tracemalloc
from io import BytesIO

import numpy as np
import pytest
from django.core.cache import cache
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.spool import spool_dataset
from adit.core.tests.factories import server_for, unreachable_server
from adit.dicom_explorer.previews import (
    MAX_DECODED_FRAME_BYTES,
    PreviewUnavailable,
    _middle_instance,
    cached_series_preview,
    non_image_reason,
    preview_size,
    render_png,
    series_preview,
)


def bundled(name: str) -> Dataset:
    """One of pydicom's own test files; never downloaded."""
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str), f"{name} is not bundled with the installed pydicom"
    return dcmread(path)


def picture(png: bytes) -> Image.Image:
    image = Image.open(BytesIO(png))
    assert image.format == "PNG"
    image.load()
    return image


def pixels_of(dataset: Dataset, max_size: int = 512) -> np.ndarray:
    return np.asarray(picture(render_png(dataset, max_size)))


def grayscale_image(pixels: np.ndarray, **attributes) -> Dataset:
    """An uncompressed 16-bit MONOCHROME2 image of ``pixels`` (frames first if 3-D)."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.Modality = "OT"
    dataset.set_pixel_data(pixels.astype(np.uint16), "MONOCHROME2", 16)
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    return dataset


def gradient(rows: int = 64, columns: int = 64) -> np.ndarray:
    """0 … 4095 from left to right."""
    return np.tile(np.linspace(0, 4095, columns), (rows, 1)).round()


def put_raw(dataset: Dataset, keyword_tag: int, vr: str, value: bytes) -> None:
    """Stores a value as read from a file, unchecked: as a hostile PACS could send it."""
    tag = Tag(keyword_tag)
    dataset[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


def unavailable_reason(dataset: Dataset) -> str:
    with pytest.raises(PreviewUnavailable) as raised:
        render_png(dataset)
    return str(raised.value)


# -- real images --------------------------------------------------------------------------------


def test_an_uncompressed_ct_is_a_gray_png_with_a_spread_of_values():
    pixels = pixels_of(bundled("CT_small.dcm"))

    assert pixels.shape == (128, 128) and pixels.dtype == np.uint8
    assert pixels.std() > 20
    assert len(np.unique(pixels)) > 100


@pytest.mark.parametrize(
    "compressed",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
    ],
)
def test_a_losslessly_compressed_image_looks_as_the_uncompressed_one(compressed):
    uncompressed = pixels_of(bundled("MR_small.dcm"))

    assert uncompressed.std() > 20
    np.testing.assert_array_equal(pixels_of(bundled(compressed)), uncompressed)


@pytest.mark.parametrize(
    "name",
    [
        "693_J2KI.dcm",  # JPEG 2000, lossy
        "JPGExtended.dcm",  # JPEG Extended, 12 bits
        "JPEGLSNearLossless_16.dcm",  # JPEG-LS, lossy
        "image_dfl.dcm",  # deflated
        "liver_1frame.dcm",  # 1 bit
        "rtdose.dcm",  # 32 bits, 15 frames
    ],
)
def test_other_grayscale_images_render(name):
    pixels = pixels_of(bundled(name))

    assert pixels.ndim == 2
    assert pixels.std() > 10


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless, RGB
        "SC_ybr_full_422_uncompressed.dcm",  # YBR_FULL_422 to RGB
        "SC_rgb_rle_16bit.dcm",  # 16 bits per sample to 8
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
    ],
)
def test_a_color_image_is_an_rgb_png_with_its_colors(name):
    image = picture(render_png(bundled(name)))

    assert image.mode == "RGB" and image.size == (100, 100)
    # pydicom's color test image: a red band at the top, white at the bottom.
    assert np.allclose(image.getpixel((50, 5)), (255, 0, 0), atol=12)  # type: ignore[arg-type]
    assert np.allclose(image.getpixel((50, 95)), (255, 255, 255), atol=12)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["examples_ybr_color.dcm", "examples_jpeg2k.dcm", "examples_palette.dcm"]
)
def test_ultrasound_in_ybr_jpeg_jpeg_2000_and_palette_color_renders(name):
    image = picture(render_png(bundled(name)))

    assert image.mode == "RGB"
    assert np.asarray(image).std() > 10


def test_a_multi_frame_image_shows_its_middle_frame():
    # Frame 2 of 2 is the inverse of frame 1: cyan where frame 1 is red.
    image = picture(render_png(bundled("SC_rgb_rle_2frame.dcm")))
    assert np.allclose(image.getpixel((50, 5)), (0, 255, 255), atol=2)  # type: ignore[arg-type]

    frames = np.stack([np.zeros((8, 8)), gradient(8, 8), np.full((8, 8), 4095)])
    pixels = pixels_of(grayscale_image(frames))
    assert pixels[0, 0] == 0 and pixels[0, -1] == 255


def test_an_enhanced_image_is_windowed_by_its_functional_groups():
    frames = np.stack([gradient()] * 3)
    windowed = grayscale_image(frames)
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 2048, 100
    shared = Dataset()
    shared.FrameVOILUTSequence = Sequence([voi])
    windowed.SharedFunctionalGroupsSequence = Sequence([shared])

    narrow = pixels_of(windowed)
    plain = pixels_of(grayscale_image(frames))
    assert np.isin(narrow, (0, 255)).mean() > 0.9
    assert np.isin(plain, (0, 255)).mean() < 0.1


# -- size ---------------------------------------------------------------------------------------


def test_a_large_image_is_scaled_down_to_512_with_its_aspect_kept():
    tall = grayscale_image(gradient(rows=2000, columns=1000))

    assert picture(render_png(tall)).size == (256, 512)
    assert picture(render_png(tall, max_size=100)).size == (50, 100)


def test_a_small_image_is_never_scaled_up():
    assert picture(render_png(grayscale_image(gradient(rows=30, columns=70)))).size == (70, 30)


def test_preview_size_keeps_the_aspect_and_at_least_one_pixel():
    assert preview_size(1024, 768, 512) == (512, 384)
    assert preview_size(10000, 3, 512) == (512, 1)
    assert preview_size(300, 200, 512) == (300, 200)


# -- windowing ----------------------------------------------------------------------------------


def saturated_share(pixels: np.ndarray) -> float:
    return float(np.isin(pixels, (0, 255)).mean())


def test_a_narrow_window_saturates_more_pixels_than_a_wide_one():
    narrow = bundled("CT_small.dcm")
    narrow.WindowCenter, narrow.WindowWidth = 40, 80
    wide = bundled("CT_small.dcm")
    wide.WindowCenter, wide.WindowWidth = 40, 4000

    assert saturated_share(pixels_of(narrow)) > saturated_share(pixels_of(wide)) + 0.3


def test_the_files_first_window_is_used():
    with_windows = bundled("MR_small.dcm")  # its window: 600 / 1600
    with_windows.WindowCenter, with_windows.WindowWidth = [600, 100], [1600, 50]
    first_only = bundled("MR_small.dcm")
    without = bundled("MR_small.dcm")
    del without.WindowCenter, without.WindowWidth

    np.testing.assert_array_equal(pixels_of(with_windows), pixels_of(first_only))
    assert not np.array_equal(pixels_of(first_only), pixels_of(without))


def test_the_window_applies_to_rescaled_values():
    ct = bundled("CT_small.dcm")
    ct.WindowCenter, ct.WindowWidth = 40, 400
    shifted = bundled("CT_small.dcm")
    shifted.RescaleIntercept = ct.RescaleIntercept + 1000
    shifted.WindowCenter, shifted.WindowWidth = 1040, 400

    np.testing.assert_array_equal(pixels_of(shifted), pixels_of(ct))
    assert pixels_of(ct).std() > 20


def test_without_a_window_the_range_of_the_values_is_shown():
    pixels = pixels_of(grayscale_image(gradient() + 1000))

    assert pixels.min() == 0 and pixels.max() == 255


def test_a_voi_lut_is_applied():
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 12]
    lut.LUTData = list(range(4095, -1, -1))  # inverts
    inverted = grayscale_image(gradient())
    inverted.VOILUTSequence = Sequence([lut])

    np.testing.assert_array_equal(pixels_of(inverted), 255 - pixels_of(grayscale_image(gradient())))


def test_monochrome1_is_shown_inverted():
    monochrome2 = grayscale_image(gradient(), WindowCenter=2048, WindowWidth=2000)
    monochrome1 = grayscale_image(gradient(), WindowCenter=2048, WindowWidth=2000)
    monochrome1.PhotometricInterpretation = "MONOCHROME1"

    np.testing.assert_array_equal(pixels_of(monochrome1), 255 - pixels_of(monochrome2))


# -- objects without an image -------------------------------------------------------------------


def test_a_structured_report_says_what_it_is():
    assert unavailable_reason(bundled("test-SR.dcm")) == (
        "A structured report (SR) has no image to preview."
    )


@pytest.mark.parametrize(
    "modality, sop_class_uid, reason",
    [
        ("KO", "", "A key object selection (KO) has no image to preview."),
        (
            "",
            "1.2.840.10008.5.1.4.1.1.88.59",
            "A key object selection (KO) has no image to preview.",
        ),
        ("PR", "", "A presentation state (PR) has no image to preview."),
        ("", "1.2.840.10008.5.1.4.1.1.11.1", "A presentation state (PR) has no image to preview."),
        ("SR", "", "A structured report (SR) has no image to preview."),
        ("", "1.2.840.10008.5.1.4.1.1.88.22", "A structured report (SR) has no image to preview."),
    ],
)
def test_sr_pr_and_ko_are_told_by_modality_or_sop_class(modality, sop_class_uid, reason):
    assert non_image_reason(modality, sop_class_uid) == reason
    dataset = Dataset()
    if modality:
        dataset.Modality = modality
    if sop_class_uid:
        dataset.SOPClassUID = sop_class_uid
    assert unavailable_reason(dataset) == reason


def test_images_are_not_taken_for_sr_pr_or_ko():
    assert non_image_reason("CT", "1.2.840.10008.5.1.4.1.1.2") is None
    assert non_image_reason("", "") is None


def test_an_instance_without_pixel_data_names_its_kind():
    assert unavailable_reason(bundled("rtplan.dcm")) == (
        "This instance (RT Plan Storage) holds no image to preview."
    )
    assert unavailable_reason(Dataset()) == "This instance holds no image to preview."


# -- what cannot be decoded ---------------------------------------------------------------------


def test_a_transfer_syntax_without_a_decoder_gives_its_name_and_uid():
    video = bundled("CT_small.dcm")
    video.file_meta.TransferSyntaxUID = MPEG2MPML

    assert unavailable_reason(video) == (
        "No preview: the transfer syntax MPEG2 Main Profile / Main Level "
        "(1.2.840.10008.1.2.4.100) cannot be decoded here: no installed decoder handles it."
    )


def test_damaged_compressed_pixel_data_says_it_cannot_be_decoded():
    damaged = bundled("MR_small_jp2klossless.dcm")
    damaged.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(256)) * 4])

    reason = unavailable_reason(damaged)
    assert reason.startswith(
        "No preview: the JPEG 2000 Image Compression (Lossless Only) pixel data cannot be decoded ("
    )


def test_a_jpeg_the_decoders_refuse_says_so():
    # A real file that libjpeg rejects (a misplaced marker segment).
    reason = unavailable_reason(bundled("JPEG-lossy.dcm"))

    assert reason.startswith("No preview: the JPEG Extended (Process 2 and 4) pixel data cannot")


def test_truncated_uncompressed_pixel_data_says_so():
    reason = unavailable_reason(bundled("MR_truncated.dcm"))

    assert "cannot be decoded" in reason and "less than expected" in reason


def test_missing_compressed_frames_say_which_one():
    frames = bundled("MR_small_jp2klossless.dcm")
    frames.NumberOfFrames = 1_000_000_000

    assert unavailable_reason(frames).startswith(
        "No preview: frame 500000001 of 1000000000 cannot be found in the compressed pixel data"
    )


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_a_compressed_frame_larger_than_the_file_says_is_not_decoded(name):
    understated = bundled(name)
    understated.Rows = understated.Columns = 8

    assert unavailable_reason(understated) == (
        "No preview: the compressed frame holds 64 × 64 pixels, but the file says 8 × 8."
    )


# -- hostile headers ----------------------------------------------------------------------------


def test_a_huge_frame_is_refused_before_decoding():
    huge = bundled("CT_small.dcm")
    huge.Rows = huge.Columns = 65535

    reason = unavailable_reason(huge)
    assert reason == (
        "No preview: one frame of 65535 × 65535 pixels would take 8,192 MB to decode, more "
        f"than the {MAX_DECODED_FRAME_BYTES // 2**20} MB a preview may use."
    )


@pytest.mark.parametrize(
    "keyword, vr, value, reason",
    [
        ("Rows", "US", b"\x00\x00", "No preview: the image has no valid size"),
        ("Columns", "US", b"abc", "No preview: the image has no valid size"),
        ("BitsAllocated", "US", b"\x0c\x00", "No preview: Bits Allocated is 12;"),
        ("BitsAllocated", "US", b"\x40\x00", "No preview: Bits Allocated is 64;"),
        ("SamplesPerPixel", "US", b"\x04\x00", "No preview: images with 4 samples per pixel"),
        ("NumberOfFrames", "IS", b"-3", "No preview: the image has '-3' frames."),
        ("NumberOfFrames", "IS", b"many", "No preview: the image has 'many' frames."),
        ("PhotometricInterpretation", "CS", b"RGB ", "No preview: the photometric interpretation"),
        ("PhotometricInterpretation", "CS", b"HSV ", "No preview: the photometric interpretation"),
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")  # pydicom's, as it should
def test_implausible_pixel_module_values_are_refused_with_a_reason(keyword, vr, value, reason):
    dataset = bundled("CT_small.dcm")
    put_raw(dataset, Tag(keyword), vr, value)

    assert unavailable_reason(dataset).startswith(reason)


@pytest.mark.parametrize(
    "keyword, vr, value",
    [
        ("WindowWidth", "DS", b"0 "),
        ("WindowWidth", "DS", b"wide"),
        ("WindowCenter", "DS", b"1e999 "),
        ("VOILUTFunction", "CS", b"CUBIC "),
        ("RescaleSlope", "DS", b"0 "),
        ("RescaleSlope", "DS", b"steep "),
        ("BitsStored", "US", b"\x28\x00"),
        ("PixelRepresentation", "US", b"\x07\x00"),
        ("NumberOfFrames", "IS", b"0 "),
    ],
)
def test_implausible_display_values_still_give_a_sensible_image(keyword, vr, value):
    dataset = bundled("CT_small.dcm")
    dataset.WindowCenter, dataset.WindowWidth = 40, 400
    put_raw(dataset, Tag(keyword), vr, value)

    pixels = pixels_of(dataset)
    assert pixels.shape == (128, 128)
    assert pixels.std() > 10


def test_a_window_width_of_zero_shows_the_range_as_without_a_window():
    zero_width = grayscale_image(gradient(), WindowCenter=100, WindowWidth=0)

    np.testing.assert_array_equal(pixels_of(zero_width), pixels_of(grayscale_image(gradient())))


def test_a_missing_photometric_interpretation_is_taken_as_monochrome2():
    without = grayscale_image(gradient())
    del without.PhotometricInterpretation

    np.testing.assert_array_equal(pixels_of(without), pixels_of(grayscale_image(gradient())))


def test_too_many_uncompressed_frames_are_refused():
    frames = bundled("CT_small.dcm")
    frames.NumberOfFrames = 1_000_000_000

    assert "cannot be decoded" in unavailable_reason(frames)


def test_a_broken_voi_lut_falls_back_to_the_range():
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 3]  # 3 bits per entry does not exist
    lut.LUTData = [0] * 4096
    broken = grayscale_image(gradient())
    broken.VOILUTSequence = Sequence([lut])

    np.testing.assert_array_equal(pixels_of(broken), pixels_of(grayscale_image(gradient())))


def test_the_callers_dataset_is_left_as_it_was():
    dataset = bundled("CT_small.dcm")
    del dataset.PhotometricInterpretation
    before = [(element.tag, element.value) for element in dataset if element.keyword != "PixelData"]

    render_png(dataset)

    assert [(e.tag, e.value) for e in dataset if e.keyword != "PixelData"] == before


# -- instances kept on disk -------------------------------------------------------------------


def on_disk(dataset: Dataset) -> Dataset:
    """The instance as a fetch hands over a large one: spooled, its pixel data on disk."""
    spooled = spool_dataset(dataset)
    assert spooled.get_item("PixelData", keep_deferred=True).value is None  # pyright: ignore[reportOptionalMemberAccess]
    return spooled


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "SC_rgb_rle_2frame.dcm", "MR_small_jp2klossless.dcm", "rtdose.dcm"]
)
def test_an_instance_on_disk_looks_as_in_memory_and_stays_on_disk(name, monkeypatch):
    monkeypatch.setattr("adit.core.dicom.spool.DEFER_SIZE", 256)  # the small files too
    in_memory = pixels_of(bundled(name))
    spooled = on_disk(bundled(name))

    np.testing.assert_array_equal(pixels_of(spooled), in_memory)
    assert spooled.get_item("PixelData", keep_deferred=True).value is None  # pyright: ignore[reportOptionalMemberAccess]


def test_a_large_multi_frame_instance_on_disk_is_shown_by_reading_one_frame():
    frames = np.stack([np.full((512, 512), number * 10) for number in range(200)])  # 100 MB
    window = {"WindowCenter": 1000, "WindowWidth": 2000}
    spooled = on_disk(grayscale_image(frames, **window))
    middle_frame = pixels_of(grayscale_image(frames[100], **window))
    del frames

    tracemalloc.start()
    try:
        pixels = pixels_of(spooled)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    np.testing.assert_array_equal(pixels, middle_frame)
    assert len(np.unique(pixels)) == 1 and pixels[0, 0] not in (0, 255)
    assert peak < 20 * 2**20


def test_cut_off_pixel_data_on_disk_is_not_read_beyond_its_end():
    spooled = on_disk(grayscale_image(np.stack([gradient(256, 256)] * 4)))
    spooled.NumberOfFrames = 40  # the header claims more than arrived

    reason = unavailable_reason(spooled)

    assert "cannot be decoded" in reason and "less than expected" in reason


def test_an_offset_table_that_goes_backwards_is_refused_without_reading_on(monkeypatch):
    monkeypatch.setattr("adit.core.dicom.spool.DEFER_SIZE", 256)
    frames = [bytes([number]) * 50_000 for number in range(3)]
    dataset = grayscale_image(np.zeros((8, 8)))
    dataset.file_meta.TransferSyntaxUID = RLELossless
    dataset.NumberOfFrames = 3
    dataset.PixelData = encapsulate(frames, has_bot=True)
    dataset["PixelData"].VR = "OB"
    offsets = np.frombuffer(dataset.PixelData[8:20], dtype="<u4").copy()
    offsets[2] = 0  # [0, F+8, 0]: the middle frame's length comes out negative
    dataset.PixelData = dataset.PixelData[:8] + offsets.tobytes() + dataset.PixelData[20:]
    spooled = on_disk(dataset)

    tracemalloc.start()
    try:
        reason = unavailable_reason(spooled)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert reason.startswith("No preview")
    assert peak < 120_000  # not the 150 kB from the frame to the value's end


# -- series ------------------------------------------------------------------------------------


def listed(*instance_numbers: int | None) -> list[Dataset]:
    instances = []
    for position, number in enumerate(instance_numbers):
        instance = Dataset()
        instance.SOPInstanceUID = f"1.2.3.{position}"
        if number is not None:
            instance.InstanceNumber = number
        instances.append(instance)
    return instances


def test_the_middle_instance_is_found_by_instance_number():
    assert _middle_instance(listed(5, 1, 4, 2, 3)).InstanceNumber == 3
    assert _middle_instance(listed(9, 8)).InstanceNumber == 9


def test_instances_without_a_number_keep_the_order_received():
    assert _middle_instance(listed(None, None, None)).SOPInstanceUID == "1.2.3.1"
    assert _middle_instance(listed(None, 2, 1)).SOPInstanceUID == "1.2.3.1"  # numbered first


# -- series through a real PACS -----------------------------------------------------------------


class CountingOperator(DicomOperator):
    """The real operator, counting the listings and fetches a preview costs."""

    def __init__(self, server):
        super().__init__(server)
        self.listings = 0
        self.fetched_sop_uids: list[str] = []

    def find_images(self, study_uid, series_uid, **filters):
        self.listings += 1
        return super().find_images(study_uid, series_uid, **filters)

    def fetch_image(self, patient_id, study_uid, series_uid, sop_uid, callback, **options):
        self.fetched_sop_uids.append(sop_uid)
        return super().fetch_image(patient_id, study_uid, series_uid, sop_uid, callback, **options)


@pytest.fixture
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def series_of_kind(studies, kind: str):
    """(study, series) of the first series whose modality is ``kind`` or, for "image", that
    has more than two instances."""
    for study in studies:
        for series in study.series:
            if kind == "image" and series.modality in ("CT", "MR") and series.instance_count > 2:
                return study, series
            if series.modality == kind:
                return study, series
    raise AssertionError(f"orthanc1 has no {kind} series")


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["c-get", "c-move", "dicomweb"])
def test_a_series_preview_is_its_middle_image_fetched_once_then_cached(
    kind, orthanc1, orthanc1_studies, receiving, empty_cache
):
    study, series = series_of_kind(orthanc1_studies, "image")
    operator = CountingOperator(server_for(orthanc1, kind=kind))
    uids = (study.patient_id, study.study_instance_uid, series.series_instance_uid)

    png = cached_series_preview(operator, *uids)
    assert cached_series_preview(operator, *uids) == png

    middle = series.sop_instance_uids[len(series.sop_instance_uids) // 2]
    assert operator.fetched_sop_uids == [middle]
    assert operator.listings == 1
    image = picture(png)
    assert image.mode == "L" and image.size == (64, 64)
    assert np.asarray(image).std() > 10


@pytest.mark.django_db
def test_the_cache_keeps_a_preview_as_long_as_the_setting_says(
    orthanc1, orthanc1_studies, settings, empty_cache
):
    settings.DICOM_EXPLORER_PREVIEW_CACHE_SECONDS = 0  # Django: expire at once
    study, series = series_of_kind(orthanc1_studies, "image")
    operator = CountingOperator(server_for(orthanc1))
    uids = (study.patient_id, study.study_instance_uid, series.series_instance_uid)

    cached_series_preview(operator, *uids)
    cached_series_preview(operator, *uids)

    assert len(operator.fetched_sop_uids) == 2


@pytest.mark.django_db
def test_an_sr_series_is_told_without_a_fetch_and_the_reason_is_cached(
    orthanc1, orthanc1_studies, empty_cache
):
    study, series = series_of_kind(orthanc1_studies, "SR")
    operator = CountingOperator(server_for(orthanc1))
    uids = (study.patient_id, study.study_instance_uid, series.series_instance_uid)

    for _ in range(2):
        with pytest.raises(PreviewUnavailable, match=r"^A structured report \(SR\) has no image"):
            cached_series_preview(operator, *uids)

    assert operator.listings == 1
    assert operator.fetched_sop_uids == []


@pytest.mark.django_db
def test_a_series_without_instances_has_no_preview(orthanc1, orthanc1_studies, empty_cache):
    study = orthanc1_studies[0]
    operator = CountingOperator(server_for(orthanc1))

    with pytest.raises(PreviewUnavailable, match="^No preview: the series holds no instances.$"):
        series_preview(operator, study.patient_id, study.study_instance_uid, generate_uid())


@pytest.mark.django_db
def test_an_unreachable_server_is_not_cached(empty_cache):
    operator = CountingOperator(unreachable_server())

    for _ in range(2):
        with pytest.raises(PreviewUnavailable) as raised:
            cached_series_preview(operator, "P1", generate_uid(), generate_uid())
        assert raised.value.reason.startswith("No preview: the image could not be fetched.")
        assert not raised.value.lasting

    assert operator.listings == 2
