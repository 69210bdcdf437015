"""The filter bar above job and task tables: a status select and the page size."""

from __future__ import annotations

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


class StatusFilterForm(forms.Form):
    status = forms.ChoiceField(
        required=False, widget=forms.Select(attrs={"class": "form-select form-select-sm"})
    )

    def __init__(self, request: HttpRequest, status_choices, **kwargs):
        super().__init__(request.GET, **kwargs)
        status = self.fields["status"]
        assert isinstance(status, forms.ChoiceField)
        status.choices = [("", "Show all"), *status_choices]

    def filter(self, queryset: QuerySet) -> QuerySet:
        # An unknown status (a stale bookmark, say) shows everything rather than an error page.
        if self.is_valid() and self.cleaned_data["status"]:
            return queryset.filter(status=self.cleaned_data["status"])
        return queryset
