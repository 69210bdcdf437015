from django.apps import AppConfig


class DicomExplorerConfig(AppConfig):
    name = "adit.dicom_explorer"
    label = "dicom_explorer"
    verbose_name = "DICOM Explorer"

    def ready(self) -> None:
        from adit.core import sections, study_pages

        from .views import study_page_url

        sections.register(
            sections.Section(
                namespace="dicom_explorer",
                label="DICOM Explorer",
                url_name="dicom_explorer:search",
                order=40,
            )
        )
        # Transfer pages link their studies here.
        study_pages.register(study_pages.StudyPage("Open in the DICOM explorer", study_page_url))
