//! The API's reads as SQL over the tables FerretDB writes, for a store that is FerretDB
//! on PostgreSQL. The server runs these; `wiberctl store explain` asks PostgreSQL how it
//! plans the very same text.
//!
//! Why not through FerretDB: FerretDB 1.24 pushes an equality filter down to PostgreSQL
//! but never a sort, and a limit only when there is no filter. So every conversation or
//! user page made FerretDB fetch, decode and sort *all* of that conversation's or user's
//! documents (about 70 ms of CPU per 1,000 documents on our machines) to return 50. In
//! SQL, one btree per page shape (`<key>, timestamp, _id`, created by
//! `server/sql/ferretdb-postgres.sql`) makes a page an index range read in order: the
//! rows read are the page's rows, however much is stored. Writes still go through
//! FerretDB, which owns the documents' layout (PJSON: the document as jsonb, plus its
//! field types under `$s`, which the reads strip).
//!
//! Parameters are positional and typed in the text (`$1::text`, `$2::bigint`), so the
//! caller binds plain `&str` and `i64`.

use crate::StoredMessage;

/// FerretDB's per-database table of collections: `{_id: <collection>, table: <name>}`.
pub const METADATA_TABLE: &str = "_ferretdb_database_metadata";

/// The table of collection `$1` in `schema` (one row or none).
pub fn table_of(schema: &str) -> String {
    format!(
        "SELECT _jsonb->>'table' FROM {}.{} WHERE _jsonb->>'_id' = $1::text",
        ident(schema),
        ident(METADATA_TABLE)
    )
}

/// The page indexes' key fields, one btree each (`<field>, timestamp, _id`).
pub const PAGE_INDEX_FIELDS: [&str; 3] = [
    StoredMessage::CONVERSATION,
    StoredMessage::FROM_USER,
    StoredMessage::TO_USER,
];

/// The name the SQL setup gives the page index on `field` of `table`: the table's name
/// cut to 35 characters (index names are at most 63 bytes).
pub fn page_index_name(table: &str, field: &str) -> String {
    let head: String = table.chars().take(35).collect();
    format!("{head}_wiber_{}_page", field.to_lowercase())
}

/// The document without FerretDB's type annotations, as JSON text: what
/// [`StoredMessage`] decodes from.
const DOCUMENT: &str = "(_jsonb - '$s')::text";

/// A conversation page, oldest first by (timestamp, _id): `$1` conversation key,
/// `$2` limit, `$3` skip.
pub fn conversation_page(schema: &str, table: &str) -> String {
    format!(
        "SELECT {DOCUMENT} FROM {t} WHERE _jsonb->'{conv}' = to_jsonb($1::text) \
         ORDER BY _jsonb->'{ts}', _jsonb->'{id}' LIMIT $2::bigint OFFSET $3::bigint",
        t = table_ref(schema, table),
        conv = StoredMessage::CONVERSATION,
        ts = StoredMessage::TIMESTAMP,
        id = StoredMessage::ID,
    )
}

/// A user's recent messages, newest first by (timestamp, _id): `$1` user, `$2` limit.
/// Two index range reads (sent, received), each cut at the limit, merged: a message to
/// oneself is in both and is taken once, from the sent side.
pub fn user_recent(schema: &str, table: &str) -> String {
    let t = table_ref(schema, table);
    let (ts, id) = (StoredMessage::TIMESTAMP, StoredMessage::ID);
    let order = format!("ORDER BY _jsonb->'{ts}' DESC, _jsonb->'{id}' DESC");
    format!(
        "SELECT {DOCUMENT} FROM (\
         (SELECT _jsonb FROM {t} WHERE _jsonb->'{from}' = to_jsonb($1::text) {order} LIMIT $2::bigint) \
         UNION ALL \
         (SELECT _jsonb FROM {t} WHERE _jsonb->'{to}' = to_jsonb($1::text) \
         AND _jsonb->'{from}' IS DISTINCT FROM to_jsonb($1::text) {order} LIMIT $2::bigint)\
         ) m {order} LIMIT $2::bigint",
        from = StoredMessage::FROM_USER,
        to = StoredMessage::TO_USER,
    )
}

/// The plain table of counters in each schema (see `server/sql/ferretdb-postgres.sql`):
/// `(collection, key, n)`, key `total`, `u:<user>`, `c:<conversation>` or `$exact`.
pub const COUNTERS_TABLE: &str = "_wiber_counts";

/// Counters `$2` (a `text[]` of keys, e.g. [`super::user_counter`]s) of collection `$1`,
/// and its `$exact` marker: rows of (key, n), by the table's primary key.
pub fn counters(schema: &str) -> String {
    format!(
        "SELECT key, n FROM {} WHERE collection = $1::text \
         AND key = ANY ($2::text[] || '{exact}'::text)",
        table_ref(schema, COUNTERS_TABLE),
        exact = super::COUNTER_EXACT,
    )
}

/// What a count without trusted counters reads instead (a store whose counters are not
/// vouched for by `$exact`): `$1` the conversation key.
pub fn count_conversation(schema: &str, table: &str) -> String {
    format!(
        "SELECT count(*) FROM {} WHERE _jsonb->'{}' = to_jsonb($1::text)",
        table_ref(schema, table),
        StoredMessage::CONVERSATION
    )
}

/// As [`count_conversation`], for user `$1` (sent or received).
pub fn count_user(schema: &str, table: &str) -> String {
    let (from, to) = (StoredMessage::FROM_USER, StoredMessage::TO_USER);
    format!(
        "SELECT count(*) FROM {} WHERE _jsonb->'{from}' = to_jsonb($1::text) \
         OR _jsonb->'{to}' = to_jsonb($1::text)",
        table_ref(schema, table)
    )
}

/// As [`count_conversation`], for everything.
pub fn count_all(schema: &str, table: &str) -> String {
    format!("SELECT count(*) FROM {}", table_ref(schema, table))
}

/// `"schema"."table"`.
fn table_ref(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// `name` as a PostgreSQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_so_any_schema_or_table_is_safe() {
        assert_eq!(ident(r#"we"ird"#), r#""we""ird""#);
        let q = conversation_page("wiber", "messages_1a2b");
        assert!(q.contains(r#"FROM "wiber"."messages_1a2b" WHERE"#), "{q}");
    }

    /// The page reads order exactly as their indexes do, or PostgreSQL would sort.
    #[test]
    fn pages_order_by_their_index_keys() {
        let c = conversation_page("s", "t");
        assert!(
            c.contains("_jsonb->'conversation' = to_jsonb($1::text)"),
            "{c}"
        );
        assert!(
            c.contains("ORDER BY _jsonb->'timestamp', _jsonb->'_id' LIMIT"),
            "{c}"
        );
        let u = user_recent("s", "t");
        assert_eq!(
            u.matches("ORDER BY _jsonb->'timestamp' DESC, _jsonb->'_id' DESC")
                .count(),
            3,
            "{u}"
        );
        assert!(u.contains("_jsonb->'fromUser' = to_jsonb($1::text)"), "{u}");
        assert!(u.contains("_jsonb->'toUser' = to_jsonb($1::text)"), "{u}");
    }

    #[test]
    fn index_names_fit_postgres() {
        let long = "m".repeat(80);
        for f in PAGE_INDEX_FIELDS {
            assert!(page_index_name(&long, f).len() <= 63);
        }
        assert_eq!(
            page_index_name("messages_ab12", "fromUser"),
            "messages_ab12_wiber_fromuser_page"
        );
    }
}
