from django import forms
from django.contrib.auth.models import Group


class ActiveGroupForm(forms.Form):
    group = forms.ModelChoiceField(queryset=Group.objects.none(), empty_label=None)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["group"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = user.groups.order_by("name")
        field.initial = user.active_group_id
