"""Partition tracking_click by created_at (PostgreSQL; nothing changes on SQLite).

The table is rebuilt as `PARTITION BY RANGE (created_at)` with a default partition and day
partitions from yesterday to a week ahead; existing rows are copied over (clicks older than
yesterday land in the default partition; `manage.py manage_partitions --split-default` gives
them day partitions of their own). Indexes, constraints and foreign keys are recreated under
their names, the primary key becomes (id, created_at) and the unique click_id key
(click_id, created_at), as PostgreSQL requires of a partitioned table. The id sequence goes
on from where it was.

The conversion → click foreign key is replaced by a constraint trigger that refuses to delete
a click that has conversions (see tracking/partitions.py for why). For a very large existing table, read the upgrade notes
in docs/scaling.md before running this migration: it copies every click once.
"""

import django.db.models.deletion
from django.db import migrations, models

import publishers.ids

TRIGGERS = """
-- At commit, like the deferred foreign key it replaces: a click that moved to another
-- partition (an UPDATE of created_at, partition maintenance) exists again by then.
CREATE FUNCTION tracking_click_protect_converted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tracking_conversion WHERE click_id = OLD.id)
       AND NOT EXISTS (SELECT 1 FROM tracking_click WHERE id = OLD.id) THEN
        RAISE EXCEPTION 'delete on table "tracking_click" violates foreign key: click % has conversions', OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER tracking_click_protect_converted
    AFTER DELETE ON tracking_click
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION tracking_click_protect_converted();
"""

DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS tracking_click_protect_converted ON tracking_click;
DROP FUNCTION IF EXISTS tracking_click_protect_converted();
"""


def _rebuild(cursor, *, partitioned: bool) -> None:
    """Rebuild tracking_click as a partitioned table (or back as a plain one), keeping its
    columns, rows, indexes, constraints and id sequence."""
    cursor.execute(
        "SELECT conrelid::regclass::text FROM pg_constraint "
        "WHERE confrelid = 'tracking_click'::regclass AND contype = 'f'"
    )
    referencing = [row[0] for row in cursor.fetchall()]
    if referencing:
        raise RuntimeError(f"Foreign keys into tracking_click from {referencing}: drop them first.")
    cursor.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'tracking_click'::regclass AND contype IN ('p', 'u', 'f')"
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = current_schema() AND tablename = 'tracking_click' "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint "
        "WHERE conrelid = 'tracking_click'::regclass)"
    )
    indexes = cursor.fetchall()
    cursor.execute("SELECT pg_get_serial_sequence('tracking_click', 'id')")
    sequence = cursor.fetchone()[0]
    next_id = 1
    if sequence:
        # The name comes from pg_get_serial_sequence, already quoted.
        cursor.execute(f"SELECT last_value, is_called FROM {sequence}")  # noqa: S608
        last_value, is_called = cursor.fetchone()
        next_id = last_value + 1 if is_called else last_value
    cursor.execute("SELECT coalesce(max(id), 0) + 1 FROM tracking_click")
    next_id = max(next_id, cursor.fetchone()[0])

    for name, _kind, _definition in constraints:
        cursor.execute(f'ALTER TABLE tracking_click DROP CONSTRAINT "{name}"')
    for name, _definition in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    cursor.execute("ALTER TABLE tracking_click ALTER COLUMN id DROP IDENTITY IF EXISTS")
    cursor.execute("ALTER TABLE tracking_click ALTER COLUMN id DROP DEFAULT")
    if sequence:
        cursor.execute(f"DROP SEQUENCE IF EXISTS {sequence}")
    cursor.execute("ALTER TABLE tracking_click RENAME TO tracking_click_legacy")

    like = "LIKE tracking_click_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE"
    if partitioned:
        cursor.execute(f"CREATE TABLE tracking_click ({like}) PARTITION BY RANGE (created_at)")
        cursor.execute("CREATE TABLE tracking_click_default PARTITION OF tracking_click DEFAULT")
    else:
        cursor.execute(f"CREATE TABLE tracking_click ({like})")
    cursor.execute("CREATE SEQUENCE tracking_click_id_seq AS bigint OWNED BY tracking_click.id")
    cursor.execute("SELECT setval('tracking_click_id_seq', %s, false)", [next_id])
    cursor.execute(
        "ALTER TABLE tracking_click ALTER COLUMN id SET DEFAULT nextval('tracking_click_id_seq')"
    )
    primary_key = "PRIMARY KEY (id, created_at)" if partitioned else "PRIMARY KEY (id)"
    for name, kind, definition in constraints:
        if kind == "p":
            definition = primary_key
        cursor.execute(f'ALTER TABLE tracking_click ADD CONSTRAINT "{name}" {definition}')
    for _name, definition in indexes:
        cursor.execute(definition)


def partition_clicks(apps, schema_editor) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    from tracking.partitions import partitions_ensure

    with connection.cursor() as cursor:
        _rebuild(cursor, partitioned=True)
    partitions_ensure(using=connection)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO tracking_click SELECT * FROM tracking_click_legacy")
        cursor.execute("DROP TABLE tracking_click_legacy")
        cursor.execute(TRIGGERS)


def unpartition_clicks(apps, schema_editor) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(DROP_TRIGGERS)
        _rebuild(cursor, partitioned=False)
        cursor.execute("INSERT INTO tracking_click SELECT * FROM tracking_click_legacy")
        cursor.execute("DROP TABLE tracking_click_legacy")


class Migration(migrations.Migration):
    dependencies = [
        ("publishers", "0003_endpoint_health"),
        ("tracking", "0004_conversion_reversed"),
    ]

    operations = [
        migrations.AlterField(
            model_name="click",
            name="click_id",
            field=models.CharField(
                default=publishers.ids.new_click_id, editable=False, max_length=32
            ),
        ),
        migrations.AlterField(
            model_name="conversion",
            name="click",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="conversions",
                to="tracking.click",
            ),
        ),
        migrations.AddConstraint(
            model_name="click",
            constraint=models.UniqueConstraint(
                fields=("click_id", "created_at"), name="tracking_click_unique_click_id"
            ),
        ),
        migrations.RunPython(partition_clicks, unpartition_clicks),
    ]
