"""A row and the rows that point to it, inserted by one SQL statement (a chain of CTEs).

The conversion intake's write is a conversion, its postbacks, the rollup's dirty-hour marks
and the advertiser's log line. As separate ORM statements (and BEGIN/COMMIT around them) they
cost six round trips, each a GIL hand-over and a wait; as one statement they cost one, and the
statement is its own transaction. The rows stay model instances built by their own code (one
home per concept): this only writes them, column by column from the models' fields, the way
`QuerySet.bulk_create` prepares values, so a new field needs no change here.

    WITH t0 AS (INSERT INTO conversion (…) VALUES (…) RETURNING id),
         t1 AS (INSERT INTO postback (conversion_id, …)
                VALUES ((SELECT id FROM t0), …), ((SELECT id FROM t0), …) RETURNING id),
         t2 AS (INSERT INTO dirty_hour (…) VALUES (…) ON CONFLICT DO NOTHING RETURNING id)
    SELECT (SELECT id FROM t0), ARRAY(SELECT id FROM t1 ORDER BY id), …

Unique constraints behave as for separate inserts (a duplicate raises IntegrityError and
nothing is written); foreign keys are checked at the end of the statement, when the parent row
exists. No signals are sent, as with `bulk_create`. On SQLite (local development), which has
no INSERT inside WITH, the same rows are inserted group by group in one transaction.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connections, transaction
from django.db.models import Model


@dataclass(frozen=True)
class Children:
    """Rows to insert with the parent: `parent_field` names their foreign key to it (filled
    with the parent's new id), `ignore_conflicts` skips rows a unique constraint already has."""

    rows: Sequence[Model]
    parent_field: str | None = None
    ignore_conflicts: bool = False


def _insert_sql(
    model: type[Model],
    rows: Sequence[Model],
    connection,
    *,
    parent_column: str | None,
    parent_cte: str | None,
    ignore_conflicts: bool,
) -> tuple[str, list]:
    meta = model._meta
    quote = connection.ops.quote_name
    # The primary key is the database's (an identity column), returned by the statement.
    fields = [f for f in meta.local_concrete_fields if f is not meta.pk and not f.generated]
    params: list = []
    tuples = []
    for row in rows:
        values = []
        for field in fields:
            if field.column == parent_column:
                pk = quote(meta.pk.column)
                values.append(f"(SELECT {pk} FROM {parent_cte})")  # noqa: S608 (names only)
                continue
            values.append("%s")
            params.append(field.get_db_prep_save(field.pre_save(row, True), connection))
        tuples.append(f"({', '.join(values)})")
    columns = ", ".join(quote(field.column) for field in fields)
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    # Only the models' own table and column names, quoted, go into the text; values are
    # parameters.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {', '.join(tuples)}"  # noqa: S608
        f"{conflict} RETURNING {quote(meta.pk.column)}"
    )
    return sql, params


def insert_together(parent: Model, *children: Children, using: str = "default") -> None:
    """Insert `parent` and each group of `children` in one statement, and give every row its
    new primary key (rows skipped by `ignore_conflicts` keep none)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        # SQLite (local development) has no INSERT in a WITH: the same rows, one insert per
        # group, in one transaction.
        _insert_separately(parent, children, using)
        return
    sql, params = _insert_sql(
        type(parent), [parent], connection, parent_column=None, parent_cte=None,
        ignore_conflicts=False,
    )  # fmt: skip
    ctes = [f"t0 AS ({sql})"]
    selects = ["(SELECT * FROM t0)"]
    groups = [group for group in children if group.rows]
    for index, group in enumerate(groups, start=1):
        model = type(group.rows[0])
        column = model._meta.get_field(group.parent_field).column if group.parent_field else None
        sql, group_params = _insert_sql(
            model, group.rows, connection, parent_column=column, parent_cte="t0",
            ignore_conflicts=group.ignore_conflicts,
        )  # fmt: skip
        ctes.append(f"t{index} AS ({sql})")
        params += group_params
        # Identity values are drawn in the VALUES' order, so ordered ids match the rows.
        selects.append(f"ARRAY(SELECT * FROM t{index} ORDER BY 1)")  # noqa: S608 (names only)
    statement = f"WITH {', '.join(ctes)} SELECT {', '.join(selects)}"
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        parent_id, *group_ids = cursor.fetchone()
    _saved(parent, parent_id, using)
    for group, ids in zip(groups, group_ids, strict=True):
        field = (
            type(group.rows[0])._meta.get_field(group.parent_field) if group.parent_field else None
        )
        if field is not None:
            for row in group.rows:
                setattr(row, field.name, parent)
        if not group.ignore_conflicts:
            for row, pk in zip(group.rows, ids, strict=True):
                _saved(row, pk, using)


def _insert_separately(parent: Model, children: tuple[Children, ...], using: str) -> None:
    with transaction.atomic(using=using):
        parent.save(force_insert=True, using=using)
        for group in children:
            if not group.rows:
                continue
            if group.parent_field:
                for row in group.rows:
                    setattr(row, group.parent_field, parent)
            type(group.rows[0]).objects.using(using).bulk_create(
                group.rows, ignore_conflicts=group.ignore_conflicts
            )


def _saved(row: Model, pk: int, using: str) -> None:
    row.pk = pk
    row._state.adding = False
    row._state.db = using
