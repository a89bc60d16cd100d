"""Postback.host: the "name:port" the fair claim partitions by, with an index of pending rows
per host. Pending rows are backfilled (the others get theirs if they are replayed: the claim
treats an empty host as one more host, so nothing is stranded)."""

from django.db import migrations, models
from django.db.models import Q

from postbacks.http import destination_host


def backfill(apps, schema_editor) -> None:
    Postback = apps.get_model("postbacks", "Postback")
    pending = Postback.objects.filter(status="pending", host="").only("pk", "url")
    batch = []
    for row in pending.iterator(chunk_size=2000):
        row.host = destination_host(row.url)
        batch.append(row)
        if len(batch) >= 2000:
            Postback.objects.bulk_update(batch, ["host"])
            batch = []
    Postback.objects.bulk_update(batch, ["host"])


class Migration(migrations.Migration):
    dependencies = [
        ("postbacks", "0004_drop_dispatched_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="postback",
            name="host",
            field=models.CharField(blank=True, default="", max_length=300),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="postback",
            index=models.Index(
                condition=Q(status="pending"),
                fields=["host", "next_attempt_at"],
                name="postbacks_pb_host_due_idx",
            ),
        ),
    ]
