"""Pages of other apps about a study, which the pages of a transfer show beside it (the DICOM
explorer's study page, say): an app registers in ``AppConfig.ready`` how to link to its page,
so that the core names no app's URLs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# (user, source node's ID, PatientID, StudyInstanceUID) -> the page's URL, or None where the
# user may not see it or the values cannot name it.
StudyLinker = Callable[[object, int, str, str], str | None]


@dataclass(frozen=True)
class StudyPage:
    label: str
    link: StudyLinker


_pages: list[StudyPage] = []


def register(page: StudyPage) -> None:
    _pages.append(page)


def links_for(user, source_id: int, patient_id: str, study_uid: str) -> list[tuple[str, str]]:
    """(label, URL) of every registered page the user may open about the study."""
    found = []
    for page in _pages:
        url = page.link(user, source_id, patient_id, study_uid)
        if url:
            found.append((page.label, url))
    return found
