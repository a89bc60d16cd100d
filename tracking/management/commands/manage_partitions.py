"""`manage.py manage_partitions`: create the coming days' click partitions and retire the days
past retention (tracking/partitions.py). Beat runs the same every hour; run it by hand after
an outage, or with `--split-default` after converting a large table."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracking import partitions


class Command(BaseCommand):
    help = "Create upcoming click partitions and drop or compact expired ones."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days-ahead", type=int, default=7, help="Create partitions this many days ahead."
        )
        parser.add_argument(
            "--retention-days",
            type=int,
            default=None,
            help="Days of clicks to keep (default CLICKS_RETENTION_DAYS; 0 keeps everything). "
            "Clicks within any campaign's attribution window and converted clicks are kept.",
        )
        parser.add_argument(
            "--split-default",
            action="store_true",
            help="First move the default partition's clicks into day partitions of their own.",
        )
        parser.add_argument("--list", action="store_true", help="Only list the partitions.")

    def handle(self, *args, **options) -> None:
        if not partitions.clicks_partitioned():
            raise CommandError(
                "tracking_click is not partitioned (PostgreSQL only, migration 0005)."
            )
        if not options["list"]:
            if options["split_default"]:
                for name in partitions.partitions_split_default():
                    self.stdout.write(f"split out {name}")
            retention = options["retention_days"]
            if retention is None:
                retention = settings.CLICKS_RETENTION_DAYS
            created, report = partitions.partitions_maintain(
                days_ahead=options["days_ahead"], retention_days=retention
            )
            for name in created:
                self.stdout.write(f"created {name}")
            for verb, names in (
                ("dropped", report.dropped),
                ("compacted", report.compacted),
                ("merged", report.merged),
            ):
                for name in names:
                    self.stdout.write(f"{verb} {name}")
            if report.cutoff is None:
                self.stdout.write("retention off: no partition expires")
            else:
                self.stdout.write(
                    f"expired before {report.cutoff:%Y-%m-%d}: ~{report.rows_removed} clicks removed"
                )
        for partition in partitions.partitions_list():
            if partition.is_default:
                bounds = "DEFAULT"
            else:
                bounds = f"{partition.lower:%Y-%m-%d %H:%M} .. {partition.upper:%Y-%m-%d %H:%M}"
            flag = " (compacted: converted clicks only)" if partition.compacted else ""
            self.stdout.write(f"{partition.name:32} {bounds}{flag}")
