"""The registry of app sections: the entries of the main menu, each of which staff can lock.

Each app registers its section in ``AppConfig.ready``. A section is identified by the URL
namespace of its views, so one check in the middleware covers every view of the app.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Section:
    namespace: str
    label: str
    url_name: str
    staff_only: bool = False
    lockable: bool = True
    in_main_menu: bool = True
    order: int = 100


_sections: dict[str, Section] = {}


def register(section: Section) -> None:
    assert section.namespace not in _sections, f"section {section.namespace} registered twice"
    _sections[section.namespace] = section


def get(namespace: str) -> Section | None:
    return _sections.get(namespace)


def all_sections() -> list[Section]:
    return sorted(_sections.values(), key=lambda section: (section.order, section.label))
