from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from .forms import ActiveGroupForm


def profile(request: HttpRequest) -> HttpResponse:
    form = ActiveGroupForm(user=request.user)
    return render(request, "accounts/profile.html", {"group_form": form})


@require_POST
def change_active_group(request: HttpRequest) -> HttpResponse:
    form = ActiveGroupForm(request.POST, user=request.user)
    if form.is_valid():
        group = form.cleaned_data["group"]
        request.user.change_active_group(group)  # type: ignore[attr-defined]
        messages.success(request, f"Active group changed to {group.name}.")
    else:
        messages.error(request, "Choose one of your own groups.")
    return redirect("profile")
