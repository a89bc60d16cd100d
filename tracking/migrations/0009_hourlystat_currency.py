"""The hourly rollup gains a currency: payouts are summed per currency, never across them.

Rows written before held payouts of every currency added together, so they are dropped and
their hours queued for the next `stats_refresh` to rebuild (both ways: the rebuild writes
whatever shape the code of that version writes)."""

from django.db import migrations, models


def requeue_hours(apps, schema_editor) -> None:
    HourlyStat = apps.get_model("tracking", "HourlyStat")
    StatsDirtyHour = apps.get_model("tracking", "StatsDirtyHour")
    hours = HourlyStat.objects.values_list("publisher_id", "hour").distinct().iterator()
    batch = []
    for publisher_id, hour in hours:
        batch.append(StatsDirtyHour(publisher_id=publisher_id, hour=hour))
        if len(batch) >= 5000:
            StatsDirtyHour.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    StatsDirtyHour.objects.bulk_create(batch, ignore_conflicts=True)
    HourlyStat.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("publishers", "0004_audit_event"),
        ("tracking", "0008_click_edge_and_dead_letters"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="hourlystat",
            name="tracking_hourlystat_unique_key",
        ),
        # Between the constraints, so that backwards the old one is added to an empty table.
        migrations.RunPython(requeue_hours, requeue_hours),
        migrations.AddField(
            model_name="hourlystat",
            name="currency",
            field=models.CharField(blank=True, default="", max_length=3),
        ),
        migrations.AddConstraint(
            model_name="hourlystat",
            # Reports read one publisher, one dimension, a range of hours.
            constraint=models.UniqueConstraint(
                fields=("publisher", "dimension", "hour", "campaign", "value", "currency"),
                name="tracking_hourlystat_unique_key",
            ),
        ),
    ]
