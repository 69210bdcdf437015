from django.db import models


class DicomWebPermissions(models.Model):
    """No table: the holder of the API's permissions, one per kind of operation, which groups
    are given in the admin."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("can_query", "Can search DICOM servers through the DICOMweb API (QIDO-RS)"),
            ("can_retrieve", "Can retrieve from DICOM servers through the DICOMweb API (WADO-RS)"),
            ("can_store", "Can store to DICOM servers through the DICOMweb API (STOW-RS)"),
            (
                "can_retrieve_unpseudonymized",
                "Can retrieve unpseudonymized data through the DICOMweb API",
            ),
        ]

    def __str__(self) -> str:
        return "DICOMweb API permissions"
