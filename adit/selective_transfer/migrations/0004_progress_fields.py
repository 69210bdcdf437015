"""Progress moved from the transfer task to every task: the same columns, neutral names."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("selective_transfer", "0003_archive_password_encrypted")]

    operations = [
        migrations.RenameField(
            model_name="selectivetransfertask", old_name="instances_done", new_name="progress_done"
        ),
        migrations.RenameField(
            model_name="selectivetransfertask",
            old_name="instances_total",
            new_name="progress_total",
        ),
    ]
