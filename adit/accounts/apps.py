from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "adit.accounts"
    label = "accounts"
    verbose_name = "Accounts"
