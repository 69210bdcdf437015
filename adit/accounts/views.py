from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
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


def locked_out(request: HttpRequest, *args) -> HttpResponse:
    """The page of a refused login once too many passwords were wrong (AXES_LOCKOUT_CALLABLE).

    django-axes passes more after the request (the original response and the credentials, or
    under ASGI only the credentials); none of it is needed. The username is not shown back, so
    the page reads the same for a real user and a made-up name.
    """
    cool_off = settings.AXES_COOLOFF_TIME
    # Every refused attempt restarts the wait, this one included.
    until = timezone.localtime() + cool_off
    context = {
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "minutes": round(cool_off.total_seconds() / 60),
        "until": until,
        "support_email": settings.SUPPORT_EMAIL,
    }
    response = render(request, "accounts/locked_out.html", context, status=429)
    response["Retry-After"] = str(round(cool_off.total_seconds()))
    return response
