from django import forms

from adit.core import sections


class SectionLockForm(forms.Form):
    namespace = forms.CharField(max_length=64)
    reason = forms.CharField(max_length=200, required=False)

    def clean(self):
        cleaned = super().clean() or {}
        section = sections.get(cleaned.get("namespace", ""))
        if section is None or not section.lockable:
            raise forms.ValidationError("There is no lockable section of that name.")
        cleaned["section"] = section
        return cleaned
