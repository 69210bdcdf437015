from django.apps import AppConfig


class DicomWebConfig(AppConfig):
    name = "adit.dicom_web"
    label = "dicom_web"
    verbose_name = "DICOMweb API"
