from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "adit.core"
    label = "core"
    verbose_name = "ADIT core"

    def ready(self):
        from adit.core import checks, sections  # noqa: F401 (checks register themselves on import)

        sections.register(
            sections.Section(
                namespace="admin_section",
                label="Admin Section",
                url_name="admin_section:index",
                staff_only=True,
                lockable=False,
                order=1000,
            )
        )
