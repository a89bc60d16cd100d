"""Conversions carry copies of their click's report dimensions (filled here from the clicks,
one UPDATE … FROM pass), and the daily pair rollup that two-dimension reports read.

Reversible: going back drops the new columns and tables (the copies can be made again)."""

import django.db.models.deletion
from django.db import migrations, models

BACKFILL = """
UPDATE tracking_conversion AS v
   SET click_created_at = c.created_at, click_country = c.country,
       click_placement = c.placement, click_creative_id = c.creative_id,
       click_smart_ad_id = c.smart_ad_id, click_keyword = c.keyword
  FROM tracking_click AS c
 WHERE c.id = v.click_id AND v.click_created_at IS NULL
"""


def copy_click_dimensions(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(BACKFILL)


class Migration(migrations.Migration):
    dependencies = [
        ("publishers", "0003_endpoint_health"),
        ("tracking", "0006_conversion_feed_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="DailyPairStat",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("dimension", models.CharField(max_length=32)),
                ("value", models.CharField(blank=True, max_length=255)),
                ("value2", models.CharField(blank=True, max_length=255)),
                ("clicks", models.PositiveBigIntegerField(default=0)),
                ("unique_clicks", models.PositiveBigIntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name="PairStatDay",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("built_until", models.DateTimeField()),
            ],
        ),
        migrations.AddField(
            model_name="conversion",
            name="click_country",
            field=models.CharField(blank=True, default="", max_length=2),
        ),
        migrations.AddField(
            model_name="conversion",
            name="click_created_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="conversion",
            name="click_creative",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="tracking.creative",
            ),
        ),
        migrations.AddField(
            model_name="conversion",
            name="click_keyword",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
        migrations.AddField(
            model_name="conversion",
            name="click_placement",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
        migrations.AddField(
            model_name="conversion",
            name="click_smart_ad_id",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
        migrations.AddIndex(
            model_name="conversion",
            index=models.Index(
                fields=["publisher", "click_created_at"], name="tracking_conv_pub_ctime_idx"
            ),
        ),
        migrations.AddField(
            model_name="dailypairstat",
            name="campaign",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="tracking.campaign",
            ),
        ),
        migrations.AddField(
            model_name="dailypairstat",
            name="publisher",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="publishers.publisher",
            ),
        ),
        migrations.AddField(
            model_name="pairstatday",
            name="publisher",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="publishers.publisher",
            ),
        ),
        migrations.AddConstraint(
            model_name="dailypairstat",
            constraint=models.UniqueConstraint(
                fields=("publisher", "dimension", "day", "campaign", "value", "value2"),
                name="tracking_dailypairstat_unique_key",
            ),
        ),
        migrations.AddConstraint(
            model_name="pairstatday",
            constraint=models.UniqueConstraint(
                fields=("publisher", "day"), name="tracking_pairstatday_unique"
            ),
        ),
        # Last: the UPDATE queues deferred foreign-key checks, after which PostgreSQL refuses
        # schema changes to the table in this transaction.
        migrations.RunPython(copy_click_dimensions, migrations.RunPython.noop),
    ]
