from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms

NEVER = "never"
EXPIRY_CHOICES = [
    ("1", "1 day"),
    ("7", "7 days"),
    ("30", "30 days"),
    ("90", "90 days"),
    (NEVER, "Never"),
]
NEVER_EXPIRING_PERMISSION = "token_authentication.can_generate_never_expiring_token"


class GenerateTokenForm(forms.Form):
    expiry = forms.ChoiceField(
        choices=EXPIRY_CHOICES,
        initial="30",
        label="Expires after",
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    access = forms.ChoiceField(
        choices=[("write", "Read and write"), ("read", "Read only")],
        initial="write",
        required=False,  # a form without the field (an older page) makes what it always made
        label="Access",
        help_text="A read-only token can search and download, but not create or change jobs "
        "or store data.",
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    description = forms.CharField(
        max_length=120,
        required=False,
        widget=forms.TextInput(attrs={"class": "form-control", "placeholder": "Optional"}),
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.can_generate_never_expiring = user.has_perm(NEVER_EXPIRING_PERMISSION)
        if not self.can_generate_never_expiring:
            # Only the rendered options lose "Never"; the field keeps it, so a forged request
            # gets the permission error below instead of a generic invalid choice error.
            widget = self.fields["expiry"].widget
            assert isinstance(widget, forms.Select)
            widget.choices = [  # pyright: ignore[reportAttributeAccessIssue]
                choice for choice in EXPIRY_CHOICES if choice[0] != NEVER
            ]

    def clean_expiry(self) -> timedelta | None:
        value = self.cleaned_data["expiry"]
        if value == NEVER:
            if not self.can_generate_never_expiring:
                raise forms.ValidationError(
                    "You do not have permission to generate never expiring tokens."
                )
            return None
        return timedelta(days=int(value))
