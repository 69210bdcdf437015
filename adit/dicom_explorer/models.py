from django.db import models


class ExplorerPermissions(models.Model):
    """No table: the holder of the explorer's permission, which groups are given in the admin."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("query_dicom_server", "Can query DICOM servers in the DICOM explorer")]

    def __str__(self) -> str:
        return "DICOM explorer permissions"
