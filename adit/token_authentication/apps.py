from django.apps import AppConfig


class TokenAuthenticationConfig(AppConfig):
    name = "adit.token_authentication"
    label = "token_authentication"
    verbose_name = "API tokens"

    def ready(self):
        from adit.core import sections

        sections.register(
            sections.Section(
                namespace="token_authentication",
                label="API Tokens",
                url_name="token_authentication:index",
                in_main_menu=False,
                order=900,
            )
        )
