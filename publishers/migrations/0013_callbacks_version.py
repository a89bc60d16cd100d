from django.db import migrations, models

# The trigger lists the columns of a template that postbacks.services reads when it builds a
# conversion's postbacks; a change to any other (health counters, secrets) leaves cached
# templates valid.
CREATE = """
CREATE FUNCTION publishers_callbacks_version_bump() RETURNS trigger AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE publishers_publisher SET callbacks_version = callbacks_version + 1
        WHERE id = OLD.publisher_id;
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.publisher_id <> OLD.publisher_id) THEN
        UPDATE publishers_publisher SET callbacks_version = callbacks_version + 1
        WHERE id = NEW.publisher_id;
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER publishers_callbacktemplate_version
AFTER INSERT OR DELETE OR UPDATE OF
    publisher_id, url_template, method, events, statuses, campaign_id, paused_at, is_active
ON publishers_callbacktemplate
FOR EACH ROW EXECUTE FUNCTION publishers_callbacks_version_bump();

CREATE FUNCTION publishers_callbacks_version_keep() RETURNS trigger AS $$
BEGIN
    NEW.callbacks_version := GREATEST(NEW.callbacks_version, OLD.callbacks_version);
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER publishers_publisher_version_keep
BEFORE UPDATE OF callbacks_version ON publishers_publisher
FOR EACH ROW EXECUTE FUNCTION publishers_callbacks_version_keep();
"""

DROP = """
DROP TRIGGER IF EXISTS publishers_publisher_version_keep ON publishers_publisher;
DROP FUNCTION IF EXISTS publishers_callbacks_version_keep();
DROP TRIGGER IF EXISTS publishers_callbacktemplate_version ON publishers_callbacktemplate;
DROP FUNCTION IF EXISTS publishers_callbacks_version_bump();
"""


def create(apps, schema_editor) -> None:
    # PostgreSQL only: without the trigger (SQLite, for local development) the intake doesn't
    # cache templates (postbacks.services.publisher_templates).
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("publishers", "0012_audit_offer_access")]

    operations = [
        migrations.AddField(
            model_name="publisher",
            name="callbacks_version",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(create, drop),
    ]
