"""Panels that apps add to the admin section: each a template and the context it needs.

The admin section (core) shows what every app registers in ``AppConfig.ready`` without
naming any of them, as the menu does with sections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class AdminPanel:
    title: str
    template_name: str
    context: Callable[[], dict]
    order: int = 100


_panels: list[AdminPanel] = []


def register(panel: AdminPanel) -> None:
    assert panel.title not in {known.title for known in _panels}, f"{panel.title} registered twice"
    _panels.append(panel)


def all_panels() -> list[AdminPanel]:
    return sorted(_panels, key=lambda panel: (panel.order, panel.title))
