//! `store check`: is the PostgreSQL under FerretDB equipped for the stack's collection?
//! The facts come from [`crate::pg::check_collection`]; this module turns them into one
//! line per item with, for each gap, what it costs and how to fix it.

use anyhow::bail;
use serde::Serialize;

use super::StoreAddr;
use crate::pg::{self, CollectionCheck};

/// One thing the setup should have left in place.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub name: String,
    pub ok: bool,
    /// What was found (or what its absence costs).
    pub detail: String,
    /// How to put it in place, when it is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// `store check`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub store: String,
    pub postgres_url: String,
    /// The PostgreSQL table of the collection (`schema.table`), when it exists.
    pub table: Option<String>,
    pub ok: bool,
    pub items: Vec<Item>,
}

/// Checks `addr`'s collection. Errors (exit 2) when there is no PostgreSQL to look at.
pub async fn check(addr: &StoreAddr) -> anyhow::Result<CheckReport> {
    let Some(url) = addr.postgres_url.as_deref() else {
        bail!(
            "cannot check the store of {}: it has no PostgreSQL that wiberctl knows of (a plain \
             MongoDB store, FerretDB on SQLite, or a store given by --mongo-uri alone). The GIN \
             indexes and count triggers `store check` looks for exist only on FerretDB on \
             PostgreSQL; give --postgres-url when the store has one",
            addr.describe()
        );
    };
    let c = pg::check_collection(url, &addr.db, &addr.collection).await?;
    Ok(report(addr, url, &c))
}

/// The items of `c` (pure, so the wording is tested without a database).
pub fn report(addr: &StoreAddr, url: &str, c: &CollectionCheck) -> CheckReport {
    let psql = |sql: &str| format!("psql '{url}' -c \"{sql}\"");
    let recreate = format!(
        "counters follow a collection only from its creation: make sure {counts} exists, then \
         recreate {coll} (on a stack: `wiberctl stack down --volumes && wiberctl stack up`; the \
         consumer creates {counts} first). Until then the API counts by reading documents",
        counts = addr.counts_collection(),
        coll = addr.collection
    );
    let mut items = vec![Item {
        name: "event trigger wiber_watch_metadata".into(),
        ok: c.event_trigger,
        detail: if c.event_trigger {
            "installed: every collection FerretDB creates is equipped".into()
        } else {
            "missing: collections FerretDB creates get no GIN indexes and no counters".into()
        },
        fix: (!c.event_trigger).then(|| {
            format!(
                "apply the setup as the cluster's owner: `psql '{url}' -f server/sql/ferretdb-postgres.sql` \
                 (collections created before it stay unequipped: recreate them)"
            )
        }),
    }];
    let table = c.table.as_ref().map(|t| format!("{}.{t}", addr.db));
    items.push(Item {
        name: format!("collection {}", addr.collection),
        ok: c.table.is_some(),
        detail: match &table {
            Some(t) => format!("table {t}"),
            None => format!("{} has no table yet", addr.describe()),
        },
        fix: c.table.is_none().then(|| {
            "the consumer creates it when it starts (`wiberctl stack status`); `wiberctl store fill` creates it too".into()
        }),
    });
    if let Some(t) = &c.table {
        for (field, present) in &c.gin {
            let name = pg::gin_index_name(t, field);
            items.push(Item {
                name: format!("GIN index on {field}"),
                ok: *present,
                detail: if *present {
                    format!("present ({name})")
                } else {
                    format!("missing: a read filtering on `{field}` scans the whole table")
                },
                fix: (!present).then(|| {
                    psql(&format!(
                        "CREATE INDEX IF NOT EXISTS {name} ON \\\"{}\\\".{t} USING gin ((_jsonb->'{field}'))",
                        addr.db
                    ))
                }),
            });
        }
        for (field, present) in &c.page {
            let name = wiber_model::reads::sql::page_index_name(t, field);
            items.push(Item {
                name: format!("page index on {field}"),
                ok: *present,
                detail: if *present {
                    format!("present ({name})")
                } else {
                    format!(
                        "missing: the API's pages by `{field}` read and sort every row of the key"
                    )
                },
                fix: (!present).then(|| {
                    psql(&format!(
                        "CREATE INDEX IF NOT EXISTS {name} ON \\\"{}\\\".{t} ((_jsonb->'{field}'), (_jsonb->'timestamp'), (_jsonb->'_id'))",
                        addr.db
                    ))
                }),
            });
        }
        items.push(Item {
            name: "count triggers".into(),
            ok: c.count_triggers,
            detail: if c.count_triggers {
                format!("wiber_count_insert and wiber_count_delete on {t}")
            } else {
                format!(
                    "missing on {t}: no exact counters, the API's counts read the documents \
                     ({} was not there when {} was created)",
                    addr.counts_collection(),
                    addr.collection
                )
            },
            fix: (!c.count_triggers).then(|| recreate.clone()),
        });
        items.push(Item {
            name: format!(
                "$exact row in {}.{}",
                addr.db,
                wiber_model::reads::sql::COUNTERS_TABLE
            ),
            ok: c.counts_exact,
            detail: if c.counts_exact {
                "present: the API reads counts from the counters".into()
            } else {
                "missing: the API does not trust the counters and counts documents".into()
            },
            fix: (!c.counts_exact).then(|| recreate.clone()),
        });
    }
    CheckReport {
        store: addr.describe(),
        postgres_url: url.to_string(),
        table,
        ok: c.ok(),
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> StoreAddr {
        StoreAddr {
            mongo_uri: "mongodb://127.0.0.1:27017".into(),
            db: "wiber".into(),
            collection: "messages".into(),
            postgres_url: Some("postgres://wiber@127.0.0.1:5432/ferretdb".into()),
        }
    }

    fn whole() -> CollectionCheck {
        CollectionCheck {
            event_trigger: true,
            table: Some("messages_1a2b".into()),
            gin: pg::GIN_FIELDS
                .iter()
                .map(|f| (f.to_string(), true))
                .collect(),
            page: wiber_model::reads::sql::PAGE_INDEX_FIELDS
                .iter()
                .map(|f| (f.to_string(), true))
                .collect(),
            count_triggers: true,
            counts_exact: true,
        }
    }

    #[test]
    fn a_whole_setup_passes_with_no_fixes() {
        let r = report(&addr(), "postgres://x", &whole());
        assert!(r.ok);
        assert!(r.items.iter().all(|i| i.ok && i.fix.is_none()));
        assert_eq!(r.table.as_deref(), Some("wiber.messages_1a2b"));
    }

    #[test]
    fn a_missing_index_is_named_with_the_statement_that_makes_it() {
        let mut c = whole();
        c.gin[1].1 = false;
        let r = report(&addr(), "postgres://x", &c);
        assert!(!r.ok);
        let bad: Vec<_> = r.items.iter().filter(|i| !i.ok).collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].name, "GIN index on conversation");
        let fix = bad[0].fix.as_deref().unwrap();
        assert!(
            fix.contains("CREATE INDEX IF NOT EXISTS messages_1a2b_wiber_conversation_gin"),
            "{fix}"
        );
        assert!(
            fix.contains("USING gin ((_jsonb->'conversation'))"),
            "{fix}"
        );
    }

    #[test]
    fn counting_off_says_how_to_turn_it_on() {
        let mut c = whole();
        c.count_triggers = false;
        c.counts_exact = false;
        let r = report(&addr(), "postgres://x", &c);
        let bad: Vec<_> = r
            .items
            .iter()
            .filter(|i| !i.ok)
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(bad, ["count triggers", "$exact row in wiber._wiber_counts"]);
        assert!(r.items.iter().filter(|i| !i.ok).all(|i| i
            .fix
            .as_deref()
            .unwrap()
            .contains("messages_counts")));
    }

    #[test]
    fn no_table_yet_is_one_item() {
        let c = CollectionCheck {
            table: None,
            gin: vec![],
            count_triggers: false,
            counts_exact: false,
            ..whole()
        };
        let r = report(&addr(), "postgres://x", &c);
        assert!(!r.ok);
        assert_eq!(r.items.len(), 2);
        assert!(!r.items[1].ok);
    }
}
