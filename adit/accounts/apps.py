from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "adit.accounts"
    label = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from adit.core import admin_panels

        admin_panels.register(
            admin_panels.AdminPanel("API usage", "accounts/_api_usage.html", _api_usage_context)
        )


def _api_usage_context() -> dict:
    from .api_usage import counter
    from .models import ApiUsage

    counter.flush()  # what this process counted since its last flush shows too
    return {"usages": ApiUsage.objects.select_related("owner")[:200]}
