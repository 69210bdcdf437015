from django.contrib import admin
from django.http import HttpRequest

from .models import Token


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):
    list_display = ("owner", "fraction", "description", "created", "expires", "last_used")
    list_filter = ("expires", "last_used")
    search_fields = ("owner__username", "description", "fraction")
    list_select_related = ("owner",)
    readonly_fields = ("owner", "token_hashed", "fraction", "created", "last_used")
    fields = ("owner", "fraction", "token_hashed", "description", "created", "expires", "last_used")

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Tokens are generated on the API tokens page, the only place the plain token is shown.
        return False
