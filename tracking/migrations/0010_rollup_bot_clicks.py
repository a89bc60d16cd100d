"""The rollups count bot clicks. Rows written before don't know them: hourly rows are dropped
and their hours queued for the next `stats_refresh`; pair days are dropped, so reports read
those days from raw clicks (exact, only slower) until a day is built again."""

from django.db import migrations, models


def forget_rollups(apps, schema_editor) -> None:
    HourlyStat = apps.get_model("tracking", "HourlyStat")
    StatsDirtyHour = apps.get_model("tracking", "StatsDirtyHour")
    batch = []
    for publisher_id, hour in HourlyStat.objects.values_list("publisher_id", "hour").distinct():
        batch.append(StatsDirtyHour(publisher_id=publisher_id, hour=hour))
    StatsDirtyHour.objects.bulk_create(batch, batch_size=5000, ignore_conflicts=True)
    HourlyStat.objects.all().delete()
    apps.get_model("tracking", "PairStatDay").objects.all().delete()
    apps.get_model("tracking", "DailyPairStat").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tracking", "0009_hourlystat_currency"),
    ]

    operations = [
        migrations.AddField(
            model_name="dailypairstat",
            name="bot_clicks",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="hourlystat",
            name="bot_clicks",
            field=models.PositiveBigIntegerField(default=0),
        ),
        # Backwards the old shape holds nothing wrong: nothing to do.
        migrations.RunPython(forget_rollups, migrations.RunPython.noop),
    ]
