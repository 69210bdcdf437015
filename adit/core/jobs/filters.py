"""The filter bar above job and task tables: a status select (and a kind's own select of its
tasks) and the page size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest

PAGE_SIZES = (25, 50, 100)
DEFAULT_PAGE_SIZE = 50


def page_size(request: HttpRequest) -> int:
    """The ``per_page`` the request asks for; capped, because a page of thousands of tasks
    would make the (polled) job page slow for everybody."""
    try:
        size = int(request.GET.get("per_page", DEFAULT_PAGE_SIZE))
    except ValueError:
        return DEFAULT_PAGE_SIZE
    if size < 1:
        return DEFAULT_PAGE_SIZE
    return min(size, max(PAGE_SIZES))


@dataclass(frozen=True)
class ExtraFilter:
    """A kind's own select in the filter bar of its tasks: those whose ``field`` has the
    chosen value (a batch transfer's tasks by what the check found)."""

    field: str
    label: str
    choices: Sequence[tuple[str, str]]


class StatusFilterForm(forms.Form):
    status = forms.ChoiceField(
        required=False, widget=forms.Select(attrs={"class": "form-select form-select-sm"})
    )

    def __init__(
        self, request: HttpRequest, status_choices, extra: ExtraFilter | None = None, **kwargs
    ):
        super().__init__(request.GET, **kwargs)
        status = self.fields["status"]
        assert isinstance(status, forms.ChoiceField)
        status.choices = [("", "Show all"), *status_choices]
        self.extra = extra
        if extra is not None:
            assert extra.field != "status"
            self.fields[extra.field] = forms.ChoiceField(
                label=extra.label, required=False, choices=[("", "Show all"), *extra.choices]
            )

    @property
    def extra_field(self) -> forms.BoundField | None:
        return self[self.extra.field] if self.extra is not None else None

    def filter(self, queryset: QuerySet) -> QuerySet:
        # An unknown value (a stale bookmark, say) shows everything rather than an error page.
        if not self.is_valid():
            return queryset
        if self.cleaned_data["status"]:
            queryset = queryset.filter(status=self.cleaned_data["status"])
        if self.extra is not None and self.cleaned_data[self.extra.field]:
            queryset = queryset.filter(**{self.extra.field: self.cleaned_data[self.extra.field]})
        return queryset
