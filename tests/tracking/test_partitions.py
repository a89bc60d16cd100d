"""Clicks partitioned by day in PostgreSQL: upcoming days are created ahead, expired days are
dropped whole (or compacted to their converted clicks), and conversions always keep their
click."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from tracking import partitions
from tracking.models import Campaign, Click, Conversion
from tracking.services import conversion_record

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC)


def day(offset: int) -> datetime:
    """Noon UTC, `offset` days from today."""
    today = NOW.replace(hour=12, minute=0, second=0, microsecond=0)
    return today + timedelta(days=offset)


def click_at(link, when: datetime) -> Click:
    return Click.objects.create(
        link=link, publisher=link.publisher, campaign=link.campaign, spid="s", created_at=when
    )


def partition_of(click: Click) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM tracking_click WHERE id = %s", [click.pk]
        )
        return cursor.fetchone()[0]


def table_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        return cursor.fetchone()[0]


def test_it_puts_todays_clicks_in_todays_partition(link):
    assert partitions.clicks_partitioned()
    click = click_at(link, NOW)
    assert partition_of(click) == f"tracking_click_p{NOW:%Y%m%d}"
    assert Click.objects.get(click_id=click.click_id) == click


def test_it_creates_upcoming_days_and_moves_clicks_out_of_the_default_partition(link):
    far = day(40)
    stray = click_at(link, far)  # no partition that far ahead yet
    assert partition_of(stray) == partitions.DEFAULT

    created = partitions.partitions_ensure(now=far - timedelta(days=2), days_ahead=3)

    assert f"tracking_click_p{far:%Y%m%d}" in created
    assert partition_of(stray) == f"tracking_click_p{far:%Y%m%d}"
    assert Click.objects.get(pk=stray.pk).click_id == stray.click_id
    # A second run finds nothing to do.
    assert partitions.partitions_ensure(now=far - timedelta(days=2), days_ahead=3) == []


def test_it_drops_expired_days_and_keeps_the_clicks_that_converted(link, campaign):
    campaign.attribution_window = timedelta(days=7)
    campaign.save()
    quiet = [click_at(link, day(-50)) for _ in range(3)]
    busy = [click_at(link, day(-49)) for _ in range(3)]
    recent = click_at(link, day(-20))
    conversion = conversion_record(
        advertiser=campaign.advertiser, click_id=busy[0].click_id, now=day(-48)
    ).conversion
    partitions.partitions_split_default()
    with connection.cursor() as cursor:
        # The emptied default partition was truncated: its space is given back.
        cursor.execute("SELECT pg_relation_size('tracking_click_default')")
        assert cursor.fetchone()[0] == 0
    quiet_day, busy_day = partition_of(quiet[0]), partition_of(busy[0])
    assert quiet_day == f"tracking_click_p{day(-50):%Y%m%d}"

    report = partitions.partitions_expire(now=NOW, retention_days=30)

    assert quiet_day in report.dropped and not table_exists(quiet_day)
    assert busy_day in report.compacted
    assert set(Click.objects.filter(pk__in=[c.pk for c in quiet + busy])) == {busy[0]}
    # Its day stays, unless its whole month is now before the cutoff: then the month's
    # compacted days are merged into one partition (depends on today's date).
    month = f"tracking_click_p{day(-49):%Y%m}"
    assert partition_of(busy[0]) == (month if month in report.merged else busy_day)
    assert Conversion.objects.select_related("click").get(pk=conversion.pk).click == busy[0]
    assert Click.objects.filter(pk=recent.pk).exists()
    # Compacted days are not compacted again.
    again = partitions.partitions_expire(now=NOW, retention_days=30)
    assert busy_day not in again.compacted + again.dropped


def test_it_keeps_days_inside_the_longest_attribution_window(link, campaign):
    Campaign.objects.filter(pk=campaign.pk).update(attribution_window=timedelta(days=90))
    old = click_at(link, day(-60))
    partitions.partitions_split_default()

    report = partitions.partitions_expire(now=NOW, retention_days=30)

    assert report.cutoff <= NOW - timedelta(days=91)
    assert Click.objects.filter(pk=old.pk).exists()


def test_it_merges_a_month_of_compacted_days_into_one_partition(link, campaign):
    campaign.attribution_window = timedelta(days=1)
    campaign.save()
    month = (NOW - timedelta(days=120)).replace(day=1, hour=6, minute=0, second=0, microsecond=0)
    kept = []
    for offset in (0, 3, 10):
        click = click_at(link, month + timedelta(days=offset))
        conversion_record(
            advertiser=campaign.advertiser, click_id=click.click_id, now=click.created_at
        )
        kept.append(click)
    click_at(link, month + timedelta(days=5))  # never converted
    partitions.partitions_split_default()

    report = partitions.partitions_expire(now=NOW, retention_days=30)

    month_name = f"tracking_click_p{month:%Y%m}"
    assert report.merged == [month_name]
    assert {partition_of(click) for click in kept} == {month_name}
    assert (
        Click.objects.filter(
            created_at__gte=month, created_at__lt=month + timedelta(days=31)
        ).count()
        == 3
    )
    merged = next(p for p in partitions.partitions_list() if p.name == month_name)
    assert merged.compacted and merged.lower == month.replace(hour=0)


def test_it_keeps_everything_when_retention_is_off(link):
    old = click_at(link, day(-400))
    partitions.partitions_split_default()
    report = partitions.partitions_expire(now=NOW, retention_days=0)
    assert report.cutoff is None and not report.dropped
    assert Click.objects.filter(pk=old.pk).exists()


def test_it_refuses_to_delete_a_converted_click_but_lets_it_move(link, campaign):
    click = click_at(link, NOW)
    conversion_record(advertiser=campaign.advertiser, click_id=click.click_id)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        with pytest.raises(IntegrityError, match="has conversions"), transaction.atomic():
            cursor.execute("DELETE FROM tracking_click WHERE id = %s", [click.pk])
        # Moving a converted click to another day (another partition) is not deleting it.
        with transaction.atomic():
            cursor.execute(
                "UPDATE tracking_click SET created_at = created_at - interval '300 days' "
                "WHERE id = %s",
                [click.pk],
            )
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    assert partition_of(click) == partitions.DEFAULT


def test_it_finds_a_click_by_id_in_the_partitions_around_its_timestamp(
    link, django_assert_num_queries
):
    recent = click_at(link, NOW)
    # The id carries the moment it was made (now), not the row's created_at.
    assert abs(partitions.click_id_time(recent.click_id) - datetime.now(UTC)) < timedelta(minutes=1)
    with django_assert_num_queries(1) as captured:
        assert (
            partitions.click_first(Click.objects.filter(click_id=recent.click_id), recent.click_id)
            == recent
        )
    assert "created_at" in captured.captured_queries[0]["sql"]
    # Backdated apart from its id (an import): found by the unbounded second look.
    backdated = click_at(link, day(-90))
    with django_assert_num_queries(2):
        found = partitions.click_first(
            Click.objects.filter(click_id=backdated.click_id), backdated.click_id
        )
    assert found == backdated
    assert partitions.click_id_time("not-a-click-id") is None


def test_it_lists_and_maintains_partitions_from_the_command(link, capsys):
    click_at(link, day(-200))
    call_command("manage_partitions", "--split-default", "--retention-days", "30")
    output = capsys.readouterr().out
    assert f"split out tracking_click_p{day(-200):%Y%m%d}" in output
    assert f"dropped tracking_click_p{day(-200):%Y%m%d}" in output
    assert "tracking_click_default" in output and "DEFAULT" in output
