//! The invariants, as a pure function of the ledger and the stored documents (so they
//! are tested without a database, and the database test only has to show the reading).

use std::collections::{BTreeMap, HashMap};

use wiber_model::ledger::{self, LedgerEntry, Outcome};
use wiber_model::report::{Example, VerifyCounts};

use super::store::StoredDoc;

/// Examples kept per kind.
pub const MAX_EXAMPLES: usize = 20;

/// Counts and examples of one check.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Findings {
    pub counts: VerifyCounts,
    pub examples: BTreeMap<String, Vec<Example>>,
}

impl Findings {
    fn note(&mut self, kind: &str, ex: Example) {
        let v = self.examples.entry(kind.to_string()).or_default();
        if v.len() < MAX_EXAMPLES {
            v.push(ex);
        }
    }
}

fn example(e: Option<&LedgerEntry>, d: Option<&StoredDoc>, detail: String) -> Example {
    let message_id = e
        .map(|e| e.message_id.clone())
        .or_else(|| d.and_then(|d| d.message_id.clone()))
        .or_else(|| d.map(|d| d.id.clone()))
        .unwrap_or_default();
    Example {
        doc_id: d.filter(|d| d.id != message_id).map(|d| d.id.clone()),
        message_id,
        conversation: e.map(|e| e.conversation),
        seq: e.map(|e| e.seq),
        partition: d.and_then(StoredDoc::partition),
        offset: d.and_then(StoredDoc::offset),
        detail,
    }
}

/// Checks run `run`'s stored documents against its ledger.
///
/// Each document is attributed to a request: by its `messageId` field (else its `_id`),
/// and failing that by the `run:conv:seq` its content starts with, so a copy stored
/// under another id still counts against the request it copies.
pub fn check(run: &str, entries: &[LedgerEntry], docs: &[StoredDoc]) -> Findings {
    let mut f = Findings::default();
    let by_id: HashMap<&str, &LedgerEntry> =
        entries.iter().map(|e| (e.message_id.as_str(), e)).collect();
    let by_key: HashMap<(u32, u64), &LedgerEntry> = entries
        .iter()
        .map(|e| ((e.conversation, e.seq), e))
        .collect();
    for e in entries {
        match e.outcome {
            Outcome::Ok => f.counts.ledger_ok += 1,
            Outcome::Failed => f.counts.ledger_failed += 1,
            Outcome::Unknown => f.counts.ledger_unknown += 1,
        }
    }
    f.counts.stored = docs.len() as u64;

    // Attribute documents to requests; the document whose `_id` is the message id comes
    // first, so a copy is what gets called the duplicate.
    let mut per_entry: HashMap<&str, Vec<&StoredDoc>> = HashMap::new();
    for d in docs {
        let id = d.message_id.as_deref().unwrap_or(&d.id);
        let entry = by_id
            .get(id)
            .or_else(|| by_id.get(d.id.as_str()))
            .or_else(|| {
                let (r, conv, seq) = ledger::parse_content_key(d.content()?)?;
                (r == run).then(|| by_key.get(&(conv, seq))).flatten()
            });
        match entry {
            Some(e) => per_entry.entry(e.message_id.as_str()).or_default().push(d),
            None => {
                f.counts.unexpected += 1;
                f.note(
                    "unexpected",
                    example(None, Some(d), "stored but never sent by this run".into()),
                );
            }
        }
    }

    let mut order: HashMap<u32, Vec<(&LedgerEntry, &StoredDoc)>> = HashMap::new();
    for e in entries {
        let Some(stored) = per_entry.get_mut(e.message_id.as_str()) else {
            if e.outcome == Outcome::Ok {
                f.counts.lost += 1;
                f.note(
                    "lost",
                    example(Some(e), None, "acknowledged (ok) but not in MongoDB".into()),
                );
            }
            continue;
        };
        stored.sort_by_key(|d| d.id != e.message_id);
        match e.outcome {
            Outcome::Failed => {
                f.counts.unexpected += stored.len() as u64;
                let why = format!("sent as failed (status {:?}) but stored", e.status);
                f.note("unexpected", example(Some(e), Some(stored[0]), why));
            }
            Outcome::Unknown => f.counts.recovered += 1,
            Outcome::Ok => {}
        }
        for extra in &stored[1..] {
            f.counts.duplicated += 1;
            let why = format!(
                "stored {} times (also as _id {})",
                stored.len(),
                stored[0].id
            );
            f.note("duplicated", example(Some(e), Some(extra), why));
        }
        for d in stored.iter() {
            if let Some(why) = corruption(run, e, d) {
                f.counts.corrupted += 1;
                f.note("corrupted", example(Some(e), Some(d), why));
            }
        }
        order
            .entry(e.conversation)
            .or_default()
            .push((e, stored[0]));
    }

    // Within a conversation sends were sequential, so Kafka offsets (the order the
    // consumers stored in) must grow with the sequence number.
    let mut convs: Vec<_> = order.into_iter().collect();
    convs.sort_by_key(|(c, _)| *c);
    for (_, mut v) in convs {
        v.sort_by_key(|(e, _)| e.seq);
        let mut prev: Option<(&LedgerEntry, &StoredDoc)> = None;
        for (e, d) in v {
            if let Some((pe, pd)) = prev {
                let out_of_order = match (pd.partition(), pd.offset(), d.partition(), d.offset()) {
                    (Some(pp), Some(po), Some(p), Some(o)) if pp == p => o <= po,
                    _ => matches!((pd.timestamp(), d.timestamp()), (Some(a), Some(b)) if b < a),
                };
                if out_of_order {
                    f.counts.reordered += 1;
                    let why = format!(
                        "seq {} stored before seq {} (partition {:?} offset {:?} vs {:?})",
                        e.seq,
                        pe.seq,
                        d.partition(),
                        d.offset(),
                        pd.offset()
                    );
                    f.note("reordered", example(Some(e), Some(d), why));
                }
            }
            prev = Some((e, d));
        }
    }
    f
}

/// Why a stored document is not what request `e` sent, if it is not. A document that
/// does not decode as a stored message (a field missing or of the wrong type) is
/// corrupted, with the decode error as the reason.
fn corruption(run: &str, e: &LedgerEntry, d: &StoredDoc) -> Option<String> {
    let stored = match &d.stored {
        Ok(m) => m,
        Err(why) => return Some(why.clone()),
    };
    let content = &stored.content;
    let hash = ledger::content_hash(content);
    if hash != e.content_hash {
        let shown: String = content.chars().take(40).collect();
        return Some(format!(
            "content differs from what was sent (hash {hash}, sent {}): {shown:?}",
            e.content_hash
        ));
    }
    let (from, to) = ledger::users(run, e.conversation);
    if stored.from_user != from || stored.to_user != to {
        return Some(format!(
            "users are {:?} → {:?}, sent {from} → {to}",
            stored.from_user, stored.to_user
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use wiber_model::{Message, StoredMessage};

    use super::*;

    const RUN: &str = "r1";

    fn entry(conv: u32, seq: u64, outcome: Outcome) -> LedgerEntry {
        let content = ledger::content(RUN, conv, seq, 40);
        LedgerEntry {
            message_id: ledger::message_id(RUN, conv, seq),
            run: RUN.into(),
            conversation: conv,
            seq,
            due: 0,
            sent: Some(0),
            answered: 1,
            outcome,
            status: Some(match outcome {
                Outcome::Ok => 200,
                Outcome::Failed => 422,
                Outcome::Unknown => 503,
            }),
            error: None,
            attempts: 1,
            size: content.len(),
            content_hash: ledger::content_hash(&content),
            warmup: false,
            step: 0,
        }
    }

    fn doc(e: &LedgerEntry, offset: i64) -> StoredDoc {
        let (from, to) = ledger::users(RUN, e.conversation);
        let message = Message {
            message_id: e.message_id.clone(),
            from_user: from,
            to_user: to,
            content: ledger::content(RUN, e.conversation, e.seq, 40),
            timestamp: offset,
            created_at: wiber_model::rfc3339_ms(offset),
        };
        StoredDoc {
            id: e.message_id.clone(),
            message_id: Some(e.message_id.clone()),
            stored_at: Some(offset),
            stored: Ok(StoredMessage::new(message, offset, 0, offset)),
        }
    }

    /// `d` as a document that does not decode, keeping what `to_stored` keeps.
    fn undecodable(d: StoredDoc) -> StoredDoc {
        StoredDoc {
            stored: Err("not a stored message: missing field `createdAt`".into()),
            ..d
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let entries: Vec<_> = (0..5).map(|s| entry(0, s, Outcome::Ok)).collect();
        let docs: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| doc(e, i as i64))
            .collect();
        let f = check(RUN, &entries, &docs);
        assert!(f.counts.pass(), "{f:?}");
        assert_eq!(f.counts.stored, 5);
        assert!(f.examples.is_empty());
    }

    #[test]
    fn every_kind_is_named() {
        let entries = vec![
            entry(0, 0, Outcome::Ok),      // lost
            entry(0, 1, Outcome::Ok),      // duplicated under another _id
            entry(0, 2, Outcome::Ok),      // corrupted
            entry(0, 3, Outcome::Failed),  // stored anyway: unexpected
            entry(0, 4, Outcome::Unknown), // stored: recovered
            entry(1, 0, Outcome::Ok),
            entry(1, 1, Outcome::Ok), // stored before seq 0: reordered
        ];
        let mut docs = vec![doc(&entries[1], 1)];
        let mut copy = doc(&entries[1], 7);
        copy.id = "someone-else".into();
        copy.message_id = Some("someone-else".into());
        let m = copy.stored.as_mut().unwrap();
        m.id = "someone-else".into();
        m.message_id = "someone-else".into();
        docs.push(copy);
        let mut bad = doc(&entries[2], 2);
        bad.stored.as_mut().unwrap().content = "r1:0:2|tampered".into();
        docs.push(bad);
        docs.push(doc(&entries[3], 3));
        docs.push(doc(&entries[4], 4));
        let mut never = doc(&entry(0, 99, Outcome::Ok), 5);
        never.stored.as_mut().unwrap().content = "injected".into();
        docs.push(never);
        docs.push(doc(&entries[5], 11));
        docs.push(doc(&entries[6], 10));
        let f = check(RUN, &entries, &docs);
        let c = f.counts;
        assert_eq!(
            (
                c.lost,
                c.duplicated,
                c.corrupted,
                c.unexpected,
                c.recovered,
                c.reordered
            ),
            (1, 1, 1, 2, 1, 1),
            "{f:#?}"
        );
        assert!(!c.pass());
        assert_eq!(f.examples["lost"][0].message_id, "r1-c0-s0");
        assert_eq!(
            f.examples["duplicated"][0].doc_id.as_deref(),
            Some("someone-else")
        );
        assert_eq!(f.examples["corrupted"][0].seq, Some(2));
        assert_eq!(f.examples["reordered"][0].offset, Some(10));
    }

    #[test]
    fn a_document_that_does_not_decode_is_a_finding_not_an_error() {
        let entries: Vec<_> = (0..3).map(|s| entry(0, s, Outcome::Ok)).collect();
        // An acknowledged message whose document was altered so that it no longer
        // decodes: corrupted, with the decode error as the detail.
        let altered = undecodable(doc(&entries[0], 0));
        // A document this run never sent, that does not decode either: unexpected.
        let mut injected = undecodable(doc(&entry(0, 99, Outcome::Ok), 5));
        injected.id = "r1-c0-s99".into();
        let docs = vec![altered, doc(&entries[1], 1), doc(&entries[2], 2), injected];
        let f = check(RUN, &entries, &docs);
        let c = f.counts;
        assert_eq!(
            (c.lost, c.duplicated, c.corrupted, c.unexpected, c.reordered),
            (0, 0, 1, 1, 0),
            "{f:#?}"
        );
        let corrupted = &f.examples["corrupted"][0];
        assert_eq!(corrupted.message_id, "r1-c0-s0");
        assert!(corrupted.detail.contains("createdAt"), "{corrupted:?}");
        assert_eq!(f.examples["unexpected"][0].message_id, "r1-c0-s99");
    }
}
