from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from .forms import GenerateTokenForm
from .models import Token


@require_http_methods(["GET", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    """Lists the user's tokens and generates new ones.

    A new plain token is part of the answer to the POST only; it is stored nowhere, so it
    cannot be shown again.
    """
    user = request.user  # type: ignore[attr-defined]
    plain_token = None
    if request.method == "POST":
        form = GenerateTokenForm(request.POST, user=user)
        if form.is_valid():
            _, plain_token = Token.objects.create_token(
                owner=user,
                description=form.cleaned_data["description"],
                expiry=form.cleaned_data["expiry"],
                read_only=form.cleaned_data["access"] == "read",
            )
            form = GenerateTokenForm(user=user)
    else:
        form = GenerateTokenForm(user=user)
    context = {
        "form": form,
        "plain_token": plain_token,
        "tokens": Token.objects.filter(owner=user),
    }
    response = render(request, "token_authentication/index.html", context)
    if plain_token is not None:
        response["Cache-Control"] = "no-store"
    return response


@require_POST
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Deletes a token of the user; staff may delete the token of anybody."""
    user = request.user  # type: ignore[attr-defined]
    tokens = Token.objects.all()
    if not user.is_staff:
        tokens = tokens.filter(owner=user)
    token = get_object_or_404(tokens, pk=pk)
    token.delete()
    messages.success(request, "Token deleted.")
    return redirect("token_authentication:index")
