"""Full-text search over chunks: SQLite's FTS5 (BM25) or PostgreSQL's tsvector.

SQLite: an external-content FTS5 table over assistant_chunk, kept in step by triggers,
so every way a chunk is written or deleted (a bulk insert, a cascade) updates it; the
unicode61 tokenizer folds case and diacritics ("Übersicht" finds "ubersicht").
PostgreSQL: a stored generated tsvector of the german and the english configuration,
with a GIN index. Other databases get neither; retrieval says so (documents.search).
"""

from django.db import migrations

SQLITE_UP = [
    """CREATE VIRTUAL TABLE assistant_chunk_fts USING fts5(
        text, content='assistant_chunk', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER assistant_chunk_fts_insert AFTER INSERT ON assistant_chunk BEGIN
        INSERT INTO assistant_chunk_fts(rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER assistant_chunk_fts_delete AFTER DELETE ON assistant_chunk BEGIN
        INSERT INTO assistant_chunk_fts(assistant_chunk_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    """CREATE TRIGGER assistant_chunk_fts_update AFTER UPDATE OF text ON assistant_chunk BEGIN
        INSERT INTO assistant_chunk_fts(assistant_chunk_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO assistant_chunk_fts(rowid, text) VALUES (new.id, new.text);
    END""",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS assistant_chunk_fts_update",
    "DROP TRIGGER IF EXISTS assistant_chunk_fts_delete",
    "DROP TRIGGER IF EXISTS assistant_chunk_fts_insert",
    "DROP TABLE IF EXISTS assistant_chunk_fts",
]
POSTGRES_UP = [
    """ALTER TABLE assistant_chunk ADD COLUMN search tsvector GENERATED ALWAYS AS (
        to_tsvector('german'::regconfig, text) || to_tsvector('english'::regconfig, text)) STORED""",
    "CREATE INDEX assistant_chunk_search ON assistant_chunk USING GIN (search)",
]
POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS assistant_chunk_search",
    "ALTER TABLE assistant_chunk DROP COLUMN IF EXISTS search",
]


def _run(statements: dict[str, list[str]]):
    def run(apps, schema_editor):
        for statement in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("assistant", "0012_documents")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_UP, "postgresql": POSTGRES_UP}),
            _run({"sqlite": SQLITE_DOWN, "postgresql": POSTGRES_DOWN}),
        )
    ]
