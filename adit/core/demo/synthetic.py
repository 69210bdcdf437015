"""Deterministic synthetic DICOM studies for tests, benchmarks and the demo PACS.

Everything derives from a seed: the same seed gives the same patients, UIDs, dates and pixels on
every machine; another seed gives other ones. Studies are first planned (names, UIDs, counts;
cheap and small) and then rendered instance by instance, so even a 1000-slice 512x512 CT series
streams through memory one slice at a time.

A default set (``generate_studies()``) has four patients whose names come from four language
groups, so it always holds plain ASCII names, Latin-1 names (``SpecificCharacterSet`` ISO_IR 100,
e.g. ``Müller^Jürgen``) and names outside Latin-1 (ISO_IR 192, e.g. ``Dvořák^Tomáš``). Each
study has CT or MR image series with real 16-bit pixel data, a Basic Text SR report and, for
every other study, a Grayscale Softcopy Presentation State that points at one of its images.
The accession numbers of a set share the prefix ``A`` + the seed as four digits, so the query
``AccessionNumber=A0042*`` finds every study of seed 42.
"""

from __future__ import annotations

import datetime
import functools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    BasicTextSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    MRImageStorage,
    generate_uid,
)

MANUFACTURER = "ADIT Synthetic"
# Entropy prefix of every UID; changing it changes all UIDs of all seeds.
_UID_NAMESPACE = "adit-synthetic-v1"
_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})


@dataclass(frozen=True)
class SeriesSummary:
    """What one generated series holds."""

    series_instance_uid: str
    modality: str
    series_number: int
    series_description: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]

    @property
    def instance_count(self) -> int:
        return len(self.sop_instance_uids)


@dataclass(frozen=True)
class StudySummary:
    """What one generated study holds, for assertions on what a PACS was loaded with."""

    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_instance_uid: str
    accession_number: str
    study_date: str
    study_time: str
    study_description: str
    series: tuple[SeriesSummary, ...]

    @property
    def modalities(self) -> tuple[str, ...]:
        """ModalitiesInStudy, sorted."""
        return tuple(sorted({series.modality for series in self.series}))

    @property
    def instance_count(self) -> int:
        return sum(series.instance_count for series in self.series)


# -- Vocabulary ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NameGroup:
    # (male form, female form) of each family name; Czech and Polish ones differ by sex.
    family_names: tuple[tuple[str, str], ...]
    male_given_names: tuple[str, ...]
    female_given_names: tuple[str, ...]
    institution: str
    referring_physicians: tuple[str, ...]


# Every family name of the Latin-1 groups has a non-ASCII letter, and every one of the Central
# European group a letter outside Latin-1, so each group always exercises its character set.
_NAME_GROUPS = (
    _NameGroup(
        family_names=tuple(
            (name, name)
            for name in ("Müller", "Schäfer", "Weiß", "Köhler", "Groß", "Schröder", "Jäger")
        ),
        male_given_names=("Jürgen", "Günther", "Lukas", "Jörg", "Matthias", "Björn"),
        female_given_names=("Käthe", "Bärbel", "Sophie", "Anna-Lena", "Jutta", "Lea"),
        institution="Universitätsklinikum Heidelberg",
        referring_physicians=("Hofmann^Klaus^^Dr. med.", "Brückner^Ute^^Dr. med."),
    ),
    _NameGroup(
        family_names=tuple(
            (name, name)
            for name in ("Lefèvre", "Lemaître", "Bénard", "Léger", "Thébault", "Ménard")
        ),
        male_given_names=("Gérard", "Théo", "François", "Luca", "Noël", "Niccolò"),
        female_given_names=("Giulia", "Hélène", "Chloé", "Zoë", "Francesca", "Mathilde"),
        institution="Hôpital Lariboisière",
        referring_physicians=("Girard^Étienne^^Dr", "Rossi^Chiara^^Dr"),
    ),
    _NameGroup(
        family_names=(
            ("Dvořák", "Dvořáková"),
            ("Černý", "Černá"),
            ("Wiśniewski", "Wiśniewska"),
            ("Šimek", "Šimková"),
            ("Zieliński", "Zielińska"),
            ("Łukasik", "Łukasik"),
        ),
        male_given_names=("Tomáš", "Jiří", "Łukasz", "Paweł", "Ondřej"),
        female_given_names=("Kateřina", "Małgorzata", "Zuzana", "Agnieszka", "Markéta"),
        institution="Fakultní nemocnice Brno",
        referring_physicians=("Horák^Petr^^MUDr.", "Kowalska^Ewa^^lek."),
    ),
    _NameGroup(
        family_names=tuple(
            (name, name)
            for name in ("Smith", "Johnson", "Taylor", "Brown", "Wilson", "O'Brien", "Walker")
        ),
        male_given_names=("John", "Michael", "James", "Robert", "Thomas^A"),
        female_given_names=("Emily", "Sarah", "Olivia", "Margaret^J", "Grace"),
        institution="St Mary's Hospital",
        referring_physicians=("Carter^Helen^^Dr", "Patel^Raj^^Dr"),
    ),
)


@dataclass(frozen=True)
class _SeriesType:
    description: str
    plane: str  # "tra", "sag" or "cor"
    slice_thickness: float
    window: tuple[float, float]  # center, width
    kernel_or_sequence: str
    instance_range: tuple[int, int]


@dataclass(frozen=True)
class _StudyType:
    description: str
    modality: str  # CT or MR
    body_part: str
    field_of_view: float  # mm
    series: tuple[_SeriesType, ...]
    history: tuple[str, ...]
    findings: tuple[str, ...]
    conclusions: tuple[str, ...]


_STUDY_TYPES = (
    _StudyType(
        description="CT Thorax mit KM",
        modality="CT",
        body_part="CHEST",
        field_of_view=360.0,
        series=(
            _SeriesType("Thorax 5.0 B31f", "tra", 5.0, (40, 400), "B31f", (4, 6)),
            _SeriesType("Lunge 1.0 B70f", "tra", 1.0, (-600, 1500), "B70f", (3, 5)),
        ),
        history=("Persistierender Husten seit 6 Wochen.", "Staging bei Bronchialkarzinom."),
        findings=(
            "Keine pulmonalen Rundherde. Kein Pleuraerguss.",
            "Solider Rundherd im rechten Oberlappen, 8 mm.",
        ),
        conclusions=("Unauffälliger Befund.", "Kontrolle in 3 Monaten empfohlen."),
    ),
    _StudyType(
        description="CT Abdomen/Becken mit KM",
        modality="CT",
        body_part="ABDOMEN",
        field_of_view=400.0,
        series=(
            _SeriesType("Abdomen venös 5.0 I31f", "tra", 5.0, (50, 350), "I31f", (4, 6)),
            _SeriesType("Abdomen arteriell 3.0", "tra", 3.0, (60, 400), "I31f", (3, 4)),
        ),
        history=("Unklare Oberbauchschmerzen.", "Tumornachsorge."),
        findings=("Leber und Milz normal groß.", "Kein Nachweis freier Flüssigkeit."),
        conclusions=("Kein pathologischer Befund.", "Stationärer Befund."),
    ),
    _StudyType(
        description="CT Schädel nativ",
        modality="CT",
        body_part="HEAD",
        field_of_view=240.0,
        series=(_SeriesType("Schädel 4.5 H31s", "tra", 4.5, (40, 80), "H31s", (4, 7)),),
        history=("Sturz mit Kopfanprall.", "Akute Kopfschmerzen."),
        findings=("Keine intrakranielle Blutung.", "Mittelständige Strukturen."),
        conclusions=("Kein Hinweis auf eine Fraktur.", "Altersentsprechender Befund."),
    ),
    _StudyType(
        description="MRT Schädel mit KM",
        modality="MR",
        body_part="HEAD",
        field_of_view=230.0,
        series=(
            _SeriesType("t1_mprage_sag", "sag", 1.0, (600, 1200), "GR", (3, 5)),
            _SeriesType("t2_tse_tra", "tra", 5.0, (700, 1400), "SE", (4, 6)),
            _SeriesType("t2_flair_tra", "tra", 5.0, (650, 1300), "IR", (3, 5)),
        ),
        history=("Schwindel seit 2 Monaten.", "Verdacht auf Multiple Sklerose."),
        findings=("Keine Diffusionsstörung.", "Einzelne unspezifische Marklagerläsionen."),
        conclusions=("Kein Tumornachweis.", "Befund vereinbar mit Mikroangiopathie."),
    ),
    _StudyType(
        description="MRT Knie rechts",
        modality="MR",
        body_part="KNEE",
        field_of_view=160.0,
        series=(
            _SeriesType("pd_tse_fs_cor", "cor", 3.0, (500, 1000), "SE", (3, 5)),
            _SeriesType("t1_tse_sag", "sag", 3.0, (600, 1200), "SE", (3, 5)),
        ),
        history=("Distorsionstrauma beim Skifahren.", "Belastungsabhängige Schmerzen."),
        findings=("Innenmeniskus-Hinterhornriss.", "Vorderes Kreuzband intakt."),
        conclusions=("Meniskusläsion Grad III.", "Kein Knochenmarködem."),
    ),
)

_CT_SERIES_STUDY = _StudyType(
    description="CT Thorax/Abdomen mit KM",
    modality="CT",
    body_part="CHESTABDOMEN",
    field_of_view=400.0,
    series=(_SeriesType("Thorax-Abdomen 1.0 B31f", "tra", 1.0, (40, 400), "B31f", (1, 1)),),
    history=("Staging.",),
    findings=("Keine Metastasen.",),
    conclusions=("Kein Tumornachweis.",),
)

# MR sequence parameters by scanning sequence: repetition time, echo time, echo train length.
_MR_TIMING = {"GR": (2300.0, 2.98, 1), "SE": (4000.0, 96.0, 15), "IR": (9000.0, 81.0, 16)}
# Direction cosines of rows and columns for each imaging plane.
_ORIENTATIONS = {
    "tra": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "sag": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "cor": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
}


# -- Plans -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Patient:
    patient_id: str
    name: str
    birth_date: datetime.date
    sex: str
    weight: int
    size: float
    group: _NameGroup


@dataclass(frozen=True)
class _SeriesPlan:
    kind: str  # "image", "sr" or "pr"
    modality: str
    sop_class_uid: str
    uid: str
    number: int
    description: str
    time: datetime.time
    sop_instance_uids: tuple[str, ...]
    image_type: _SeriesType | None  # only for image series


@dataclass(frozen=True)
class _StudyPlan:
    seed: int
    index: int
    study_type: _StudyType
    patient: _Patient
    uid: str
    frame_of_reference_uid: str
    accession_number: str
    study_id: str
    date: datetime.date
    time: datetime.time
    referring_physician: str
    station_name: str
    report: tuple[str, str, str]  # history, finding, conclusion
    series: tuple[_SeriesPlan, ...]

    def summary(self) -> StudySummary:
        return StudySummary(
            patient_id=self.patient.patient_id,
            patient_name=self.patient.name,
            patient_birth_date=_da(self.patient.birth_date),
            patient_sex=self.patient.sex,
            study_instance_uid=self.uid,
            accession_number=self.accession_number,
            study_date=_da(self.date),
            study_time=_tm(self.time),
            study_description=self.study_type.description,
            series=tuple(
                SeriesSummary(
                    series_instance_uid=series.uid,
                    modality=series.modality,
                    series_number=series.number,
                    series_description=series.description,
                    sop_class_uid=series.sop_class_uid,
                    sop_instance_uids=series.sop_instance_uids,
                )
                for series in self.series
            ),
        )

    @property
    def image_series(self) -> list[_SeriesPlan]:
        return [series for series in self.series if series.kind == "image"]


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[_UID_NAMESPACE, *map(str, parts)])


def _plan_patients(rng: random.Random, count: int) -> list[_Patient]:
    groups = list(_NAME_GROUPS)
    rng.shuffle(groups)
    patient_ids = rng.sample(range(10_000_000, 100_000_000), count)
    patients: list[_Patient] = []
    used_names: set[str] = set()
    for index in range(count):
        group = groups[index % len(groups)]
        # Names are drawn again while taken; a large set runs out of names and then gets
        # namesakes, as hospitals do.
        for _attempt in range(20):
            sex = rng.choice("MF")
            male_family, female_family = rng.choice(group.family_names)
            family = male_family if sex == "M" else female_family
            given_names = group.male_given_names if sex == "M" else group.female_given_names
            name = f"{family}^{rng.choice(given_names)}"
            if name not in used_names:
                break
        used_names.add(name)
        birth_date = datetime.date(1935, 1, 1) + datetime.timedelta(days=rng.randrange(70 * 365))
        patients.append(
            _Patient(
                patient_id=str(patient_ids[index]),
                name=name,
                birth_date=birth_date,
                sex=sex,
                weight=rng.randint(48, 110),
                size=round(rng.uniform(1.52, 1.95), 2),
                group=group,
            )
        )
    return patients


def _plan_study(
    rng: random.Random,
    *,
    seed: int,
    index: int,
    patient: _Patient,
    study_type: _StudyType,
    instances: int | None = None,
    accession_prefix: str = "A",
) -> _StudyPlan:
    study_uid = _uid(seed, "study", accession_prefix, index)
    earliest = max(datetime.date(2016, 1, 1), patient.birth_date + datetime.timedelta(days=365))
    date = earliest + datetime.timedelta(
        days=rng.randrange((datetime.date(2025, 12, 31) - earliest).days)
    )
    start = datetime.datetime.combine(
        date, datetime.time(rng.randint(7, 18), rng.randrange(60), rng.randrange(60))
    )
    series: list[_SeriesPlan] = []

    def add_series(
        kind: str,
        modality: str,
        sop_class: str,
        description: str,
        count: int,
        image_type: _SeriesType | None = None,
    ) -> None:
        number = len(series) + 1
        series_uid = _uid(study_uid, "series", number)
        series.append(
            _SeriesPlan(
                kind=kind,
                modality=modality,
                sop_class_uid=sop_class,
                uid=series_uid,
                number=number,
                description=description,
                time=(start + datetime.timedelta(minutes=2 * number)).time(),
                sop_instance_uids=tuple(
                    _uid(series_uid, "instance", n) for n in range(1, count + 1)
                ),
                image_type=image_type,
            )
        )

    image_class = CTImageStorage if study_type.modality == "CT" else MRImageStorage
    for series_type in study_type.series:
        count = instances if instances is not None else rng.randint(*series_type.instance_range)
        add_series(
            "image", study_type.modality, image_class, series_type.description, count, series_type
        )
    if instances is None:
        add_series("sr", "SR", BasicTextSRStorage, "Befund", 1)
        if index % 2 == 0:
            add_series("pr", "PR", GrayscaleSoftcopyPresentationStateStorage, "Annotationen", 1)
    return _StudyPlan(
        seed=seed,
        index=index,
        study_type=study_type,
        patient=patient,
        uid=study_uid,
        frame_of_reference_uid=_uid(study_uid, "frame-of-reference"),
        accession_number=f"{accession_prefix}{seed % 10_000:04d}{index + 1:04d}",
        study_id=str(rng.randint(1000, 99_999)),
        date=date,
        time=start.time(),
        referring_physician=rng.choice(patient.group.referring_physicians),
        station_name=f"{study_type.modality}{rng.randint(1, 4):02d}",
        report=(
            rng.choice(study_type.history),
            rng.choice(study_type.findings),
            rng.choice(study_type.conclusions),
        ),
        series=tuple(series),
    )


def _plan_studies(seed: int, patients: int) -> list[_StudyPlan]:
    rng = random.Random(seed)
    plans: list[_StudyPlan] = []
    for patient in _plan_patients(rng, patients):
        for _ in range(rng.randint(1, 2)):
            study_type = rng.choice(_STUDY_TYPES)
            plans.append(
                _plan_study(
                    rng, seed=seed, index=len(plans), patient=patient, study_type=study_type
                )
            )
    return plans


def _plan_ct_series(seed: int, instances: int) -> _StudyPlan:
    rng = random.Random(f"ct-series-{seed}")
    (patient,) = _plan_patients(rng, 1)
    return _plan_study(
        rng,
        seed=seed,
        index=0,
        patient=patient,
        study_type=_CT_SERIES_STUDY,
        instances=instances,
        accession_prefix="B",
    )


# -- Public API --------------------------------------------------------------------------------


def describe_studies(seed: int = 42, patients: int = 4) -> list[StudySummary]:
    """Summaries of the studies ``generate_studies`` yields for the same arguments, in order.

    Computed from the plan alone: no pixels are made and nothing is written.
    """
    return [plan.summary() for plan in _plan_studies(seed, patients)]


def generate_studies(
    seed: int = 42, patients: int = 4, rows: int = 64, columns: int = 64
) -> Iterator[Dataset]:
    """Yields every instance of a set of realistic studies, one at a time.

    Args:
        seed: Everything (names, UIDs, dates, pixels) follows from it.
        patients: Number of patients; each gets one or two studies.
        rows: Rows of each image.
        columns: Columns of each image.

    Yields:
        Datasets with file meta information (Explicit VR Little Endian), ready for
        ``dcmwrite(..., enforce_file_format=True)``.
    """
    for plan in _plan_studies(seed, patients):
        yield from _render_study(plan, rows, columns)


def describe_ct_series(instances: int, seed: int = 0) -> StudySummary:
    """Summary of the study ``generate_ct_series`` yields for the same arguments."""
    return _plan_ct_series(seed, instances).summary()


def generate_ct_series(
    instances: int, rows: int = 512, columns: int = 512, seed: int = 0
) -> Iterator[Dataset]:
    """Yields one study with one CT series of ``instances`` slices, for benchmarks.

    Each slice is made when it is asked for (about 0.5 MB at 512x512), so a caller that writes
    or sends each one before taking the next holds one slice at a time. Its UIDs differ from
    those of ``generate_studies`` with the same seed.
    """
    return _render_study(_plan_ct_series(seed, instances), rows, columns)


def write_datasets(folder: str | Path, datasets: Iterable[Dataset]) -> list[Path]:
    """Writes datasets as DICOM files ``folder/<study uid>/<series uid>/<sop uid>.dcm``."""
    paths: list[Path] = []
    for dataset in datasets:
        path = (
            Path(folder)
            / dataset.StudyInstanceUID
            / dataset.SeriesInstanceUID
            / f"{dataset.SOPInstanceUID}.dcm"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(path, dataset, enforce_file_format=True)
        paths.append(path)
    return paths


def write_studies(
    folder: str | Path, seed: int = 42, patients: int = 4, rows: int = 64, columns: int = 64
) -> list[Path]:
    """Writes the studies of ``generate_studies`` into ``folder``; returns the file paths."""
    return write_datasets(folder, generate_studies(seed, patients, rows, columns))


# -- Rendering ---------------------------------------------------------------------------------


def _render_study(plan: _StudyPlan, rows: int, columns: int) -> Iterator[Dataset]:
    image_series = plan.image_series
    for series in plan.series:
        for number, sop_uid in enumerate(series.sop_instance_uids, start=1):
            if series.kind == "image":
                dataset = _image(plan, series, number, sop_uid, rows, columns)
            elif series.kind == "sr":
                dataset = _text_report(plan, series, sop_uid, image_series)
            else:
                dataset = _presentation_state(plan, series, sop_uid, image_series[0], rows, columns)
            _finish(dataset)
            yield dataset


def _common(plan: _StudyPlan, series: _SeriesPlan, sop_uid: str, number: int) -> Dataset:
    """Patient, study, series, equipment and SOP common attributes of every instance."""
    patient = plan.patient
    ds = Dataset()
    ds.SOPClassUID = series.sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = _da(plan.date)
    ds.SeriesDate = _da(plan.date)
    ds.ContentDate = _da(plan.date)
    ds.StudyTime = _tm(plan.time)
    ds.SeriesTime = _tm(series.time)
    ds.ContentTime = _tm(series.time)
    ds.AccessionNumber = plan.accession_number
    ds.Modality = series.modality
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = patient.group.institution
    ds.ReferringPhysicianName = plan.referring_physician
    ds.StationName = plan.station_name
    ds.StudyDescription = plan.study_type.description
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = f"Phantom {plan.study_type.modality}"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = _da(patient.birth_date)
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{_age(patient.birth_date, plan.date):03d}Y"
    ds.PatientSize = patient.size
    ds.PatientWeight = patient.weight
    ds.SoftwareVersions = "1.0"
    ds.StudyInstanceUID = plan.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = plan.study_id
    ds.SeriesNumber = series.number
    ds.InstanceNumber = number
    return ds


def _image(
    plan: _StudyPlan,
    series: _SeriesPlan,
    number: int,
    sop_uid: str,
    rows: int,
    columns: int,
) -> Dataset:
    series_type = series.image_type
    assert series_type is not None
    study_type = plan.study_type
    ds = _common(plan, series, sop_uid, number)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if series_type.plane == "tra" else "OTHER"]
    ds.AcquisitionNumber = 1
    ds.BodyPartExamined = study_type.body_part
    ds.ProtocolName = study_type.description
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = plan.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""

    # Image plane: slices step along the plane's normal, centred on the scanned region.
    spacing = study_type.field_of_view / max(rows, columns)
    count = len(series.sop_instance_uids)
    offset = (number - 1 - (count - 1) / 2) * series_type.slice_thickness
    half = study_type.field_of_view / 2
    if series_type.plane == "tra":
        position = (-half, -half, -offset)
        location = -offset
    elif series_type.plane == "sag":
        position = (offset, -half, half)
        location = offset
    else:
        position = (-half, offset, half)
        location = offset
    ds.ImageOrientationPatient = list(_ORIENTATIONS[series_type.plane])
    ds.ImagePositionPatient = [round(value, 3) for value in position]
    ds.SliceLocation = round(location, 3)
    ds.SliceThickness = series_type.slice_thickness
    ds.PixelSpacing = [round(spacing, 6), round(spacing, 6)]

    if study_type.modality == "CT":
        ds.KVP = 120
        ds.ConvolutionKernel = series_type.kernel_or_sequence
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
    else:
        repetition, echo, train = _MR_TIMING[series_type.kernel_or_sequence]
        ds.ScanningSequence = series_type.kernel_or_sequence
        ds.SequenceVariant = "SP" if series_type.kernel_or_sequence == "GR" else "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D" if series_type.kernel_or_sequence == "GR" else "2D"
        ds.RepetitionTime = repetition
        ds.EchoTime = echo
        ds.EchoTrainLength = train
        ds.MagneticFieldStrength = 3
        ds.ImagedNucleus = "1H"
    ds.WindowCenter, ds.WindowWidth = series_type.window

    # 12 of 16 bits used, unsigned: the usual layout of CT and MR images.
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    relative_position = (number - 0.5) / count
    noise_seed = [plan.seed, plan.index, series.number, number, rows, columns]
    pixels = _phantom(study_type.modality, rows, columns, relative_position, noise_seed)
    ds.PixelData = pixels.tobytes()
    return ds


def _text_report(
    plan: _StudyPlan, series: _SeriesPlan, sop_uid: str, evidence: list[_SeriesPlan]
) -> Dataset:
    """A Basic Text SR in the shape of TID 2000 (history, findings, conclusions)."""
    ds = _common(plan, series, sop_uid, 1)
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    report_time = datetime.datetime.combine(plan.date, series.time)
    observer = Dataset()
    observer.VerifyingObserverName = plan.referring_physician
    observer.VerifyingOrganization = plan.patient.group.institution
    observer.VerificationDateTime = report_time.strftime("%Y%m%d%H%M%S")
    observer.VerifyingObserverIdentificationCodeSequence = Sequence()
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.PerformedProcedureCodeSequence = Sequence()
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([_evidence(plan, evidence)])

    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2000"
    ds.ContentTemplateSequence = Sequence([template])
    history, finding, conclusion = plan.report
    ds.ContentSequence = Sequence(
        [
            _section(("121060", "History"), ("121060", "History"), history),
            _section(("121070", "Findings"), ("121071", "Finding"), finding),
            _section(("121076", "Conclusions"), ("121077", "Conclusion"), conclusion),
        ]
    )
    return ds


def _presentation_state(
    plan: _StudyPlan,
    series: _SeriesPlan,
    sop_uid: str,
    image_series: _SeriesPlan,
    rows: int,
    columns: int,
) -> Dataset:
    """A Grayscale Softcopy Presentation State with a window and a text note on one image."""
    series_type = image_series.image_type
    assert series_type is not None
    ds = _common(plan, series, sop_uid, 1)
    ds.ContentLabel = "BEFUND"
    ds.ContentDescription = "Markierung des Befunds"
    ds.ContentCreatorName = plan.referring_physician
    ds.PresentationCreationDate = _da(plan.date)
    ds.PresentationCreationTime = _tm(series.time)

    def referenced_image() -> Dataset:
        # A fresh item per sequence: a shared one would change in both places at once.
        image = Dataset()
        image.ReferencedSOPClassUID = image_series.sop_class_uid
        image.ReferencedSOPInstanceUID = image_series.sop_instance_uids[0]
        return image

    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = image_series.uid
    referenced_series.ReferencedImageSequence = Sequence([referenced_image()])
    ds.ReferencedSeriesSequence = Sequence([referenced_series])

    if plan.study_type.modality == "CT":
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = series_type.window
    ds.SoftcopyVOILUTSequence = Sequence([voi])
    ds.PresentationLUTShape = "IDENTITY"

    area = Dataset()
    area.DisplayedAreaTopLeftHandCorner = [1, 1]
    area.DisplayedAreaBottomRightHandCorner = [columns, rows]
    area.PresentationSizeMode = "SCALE TO FIT"
    area.PresentationPixelAspectRatio = [1, 1]
    ds.DisplayedAreaSelectionSequence = Sequence([area])
    ds.ImageRotation = 0
    ds.ImageHorizontalFlip = "N"

    layer = Dataset()
    layer.GraphicLayer = "BEFUND"
    layer.GraphicLayerOrder = 1
    layer.GraphicLayerDescription = "Befundmarkierung"
    ds.GraphicLayerSequence = Sequence([layer])
    note = Dataset()
    note.BoundingBoxAnnotationUnits = "PIXEL"
    note.BoundingBoxTopLeftHandCorner = [columns * 0.1, rows * 0.1]
    note.BoundingBoxBottomRightHandCorner = [columns * 0.6, rows * 0.2]
    note.BoundingBoxTextHorizontalJustification = "LEFT"
    note.UnformattedTextValue = plan.report[2]
    annotation = Dataset()
    annotation.GraphicLayer = "BEFUND"
    annotation.ReferencedImageSequence = Sequence([referenced_image()])
    annotation.TextObjectSequence = Sequence([note])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    return ds


def _evidence(plan: _StudyPlan, image_series: list[_SeriesPlan]) -> Dataset:
    study = Dataset()
    study.StudyInstanceUID = plan.uid
    study.ReferencedSeriesSequence = Sequence()
    for series in image_series:
        item = Dataset()
        item.SeriesInstanceUID = series.uid
        item.ReferencedSOPSequence = Sequence()
        for sop_uid in series.sop_instance_uids:
            reference = Dataset()
            reference.ReferencedSOPClassUID = series.sop_class_uid
            reference.ReferencedSOPInstanceUID = sop_uid
            item.ReferencedSOPSequence.append(reference)
        study.ReferencedSeriesSequence.append(item)
    return study


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code


def _section(heading: tuple[str, str], concept: tuple[str, str], text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([_code(concept[0], "DCM", concept[1])])
    item.TextValue = text
    container = Dataset()
    container.RelationshipType = "CONTAINS"
    container.ValueType = "CONTAINER"
    container.ConceptNameCodeSequence = Sequence([_code(heading[0], "DCM", heading[1])])
    container.ContinuityOfContent = "SEPARATE"
    container.ContentSequence = Sequence([item])
    return container


def _finish(ds: Dataset) -> None:
    """Sets the character set the text needs and the file meta information."""
    character_set = _character_set(ds)
    if character_set:
        ds.SpecificCharacterSet = character_set
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "ADIT_SYNTHETIC"
    ds.file_meta = meta


def _character_set(ds: Dataset) -> str | None:
    """ISO_IR 100 when all text fits Latin-1, ISO_IR 192 (UTF-8) otherwise, None for ASCII."""
    texts = [str(element.value) for element in ds.iterall() if element.VR in _TEXT_VRS]
    text = "".join(texts)
    if text.isascii():
        return None
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return "ISO_IR 192"
    return "ISO_IR 100"


# -- Pixels ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _grid(rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centre coordinates scaled to -1..1; cached, as every slice of a shape needs them."""
    y = np.linspace(-1, 1, rows, dtype=np.float32)[:, np.newaxis]
    x = np.linspace(-1, 1, columns, dtype=np.float32)[np.newaxis, :]
    return y, x


def _ellipse(
    grid: tuple[np.ndarray, np.ndarray], center: tuple[float, float], radii: tuple[float, float]
) -> np.ndarray:
    y, x = grid
    return ((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 <= 1


def _phantom(
    modality: str, rows: int, columns: int, position: float, noise_seed: list[int]
) -> np.ndarray:
    """A body-like phantom at ``position`` (0..1 through the volume) as 12-bit stored values.

    CT values are Hounsfield units + 1024 (the rescale intercept is -1024): air, soft tissue,
    two lungs, contrast-filled vessel and a vertebra. MR values are arbitrary signal levels.
    Structures grow and shrink with the position, so neighbouring slices differ like real ones.
    """
    grid = _grid(rows, columns)
    bulge = float(np.sin(np.pi * position))  # 0 at the ends of the volume, 1 in its middle
    rng = np.random.default_rng(noise_seed)
    if modality == "CT":
        image = np.full((rows, columns), -1000 + 1024, dtype=np.int32)
        image[_ellipse(grid, (0, 0.05), (0.8, 0.55 + 0.05 * bulge))] = 40 + 1024
        for side in (-0.38, 0.38):
            image[_ellipse(grid, (side, -0.02), (0.28, 0.32 * (0.5 + bulge)))] = -850 + 1024
        image[_ellipse(grid, (0.05, -0.05), (0.07, 0.07))] = 250 + 1024
        image[_ellipse(grid, (0, 0.42), (0.1, 0.09))] = 700 + 1024
        noise = 25
    else:
        image = np.zeros((rows, columns), dtype=np.int32)
        image[_ellipse(grid, (0, 0), (0.7, 0.85))] = 600
        image[_ellipse(grid, (0, 0), (0.6 * (0.6 + 0.4 * bulge), 0.75))] = 900
        image[_ellipse(grid, (0, -0.1), (0.12 * bulge + 0.02, 0.25))] = 300
        noise = 40
    image += rng.integers(-noise, noise + 1, size=(rows, columns), dtype=np.int32)
    return np.clip(image, 0, 4095).astype("<u2")


# -- Formatting --------------------------------------------------------------------------------


def _da(date: datetime.date) -> str:
    return date.strftime("%Y%m%d")


def _tm(time: datetime.time) -> str:
    return time.strftime("%H%M%S")


def _age(birth_date: datetime.date, on: datetime.date) -> int:
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))
