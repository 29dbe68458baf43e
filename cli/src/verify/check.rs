//! The invariants, as a pure function of the ledger and the stored documents (so they
//! are tested without a database, and the database test only has to show the reading).

use std::collections::{BTreeMap, HashMap};

use wiber_model::ledger::{self, LedgerEntry, Outcome};
use wiber_model::report::{Example, VerifyCounts};

use super::fate::{Fates, Unstored};
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

    /// Adds what another part of the run found (the final verify checks a run bucket by
    /// bucket, in `spill`).
    pub fn merge(&mut self, other: Findings) {
        self.counts.add(&other.counts);
        for (kind, examples) in other.examples {
            for ex in examples {
                self.note(&kind, ex);
            }
        }
    }
}

/// Counts `d` as stored but never sent by the run.
pub(crate) fn note_unexpected(f: &mut Findings, d: &StoredDoc) {
    f.counts.unexpected += 1;
    f.note(
        "unexpected",
        example(None, Some(d), "stored but never sent by this run".into()),
    );
}

pub(crate) fn example(e: Option<&LedgerEntry>, d: Option<&StoredDoc>, detail: String) -> Example {
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
        // The stored copy's, else where the API said Kafka put it (a lost message has
        // no stored copy: its acked position is where to look in the log).
        partition: d
            .and_then(StoredDoc::partition)
            .or(e.and_then(|e| e.partition)),
        offset: d.and_then(StoredDoc::offset).or(e.and_then(|e| e.offset)),
        detail,
    }
}

/// Checks run `run`'s stored documents against its ledger.
///
/// Each document is attributed to a request: by its `messageId` field (else its `_id`),
/// and failing that by the `run:conv:seq` its content starts with, so a copy stored
/// under another id still counts against the request it copies.
///
/// `read_back`: message ids of conversations in the order the API returned them
/// ([`super::readback`]); conversations not in it are ordered from the documents by the
/// API's sort key (timestamp, then messageId).
pub fn check(
    run: &str,
    entries: &[LedgerEntry],
    docs: &[StoredDoc],
    read_back: Option<&BTreeMap<u32, Vec<String>>>,
) -> Findings {
    check_with(run, entries, docs, read_back, None)
}

/// [`check`], with what Kafka says of messages the store does not hold ([`Fates`]): an
/// `ok` request not stored is `dead_lettered` when the dead-letter topic holds it (refused
/// or undecodable), `stalled` when its partition's committed offset never passed it, and
/// `lost` otherwise (always, without `fates`). A request whose id has a conflict dead
/// letter (reused with other content) counts in `conflicts`, stored or not; when the
/// letter holds the request's own content, what is stored under its id is the other
/// message's, and is not held against the request as corrupted or reordered.
pub fn check_with(
    run: &str,
    entries: &[LedgerEntry],
    docs: &[StoredDoc],
    read_back: Option<&BTreeMap<u32, Vec<String>>>,
    fates: Option<&Fates>,
) -> Findings {
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
            None => note_unexpected(&mut f, d),
        }
    }

    // Per conversation, the requests that were stored (ok and recovered), with the
    // document a reader gets: the one under the message id.
    let mut order: HashMap<u32, Vec<(&LedgerEntry, &StoredDoc)>> = HashMap::new();
    for e in entries {
        let conflict = fates
            .filter(|_| e.outcome == Outcome::Ok)
            .and_then(|fs| Some((fs, fs.conflict(&e.message_id)?)));
        if let Some((fs, c)) = conflict {
            f.counts.conflicts += 1;
            let stored = per_entry.get(e.message_id.as_str()).map(|v| v[0]);
            f.note(
                "conflicts",
                example(Some(e), stored, fs.describe_conflict(e, c)),
            );
        }
        // The store holds another message under this id: not this request's copy.
        let not_ours = conflict.is_some_and(|(fs, c)| fs.refused_is_ours(e, c));
        let Some(stored) = per_entry.get_mut(e.message_id.as_str()) else {
            match e.outcome {
                // Counted as a conflict above.
                Outcome::Ok if conflict.is_some() => {}
                Outcome::Ok => match fates.map_or(Unstored::Lost, |fs| fs.unstored(e)) {
                    Unstored::DeadLettered(why) => {
                        f.counts.dead_lettered += 1;
                        f.note("dead_lettered", example(Some(e), None, why));
                    }
                    Unstored::Stalled(why) => {
                        f.counts.stalled += 1;
                        f.note("stalled", example(Some(e), None, why));
                    }
                    Unstored::Lost => {
                        f.counts.lost += 1;
                        f.note(
                            "lost",
                            example(Some(e), None, "acknowledged (ok) but not in MongoDB".into()),
                        );
                    }
                },
                Outcome::Unknown => f.counts.indeterminate += 1,
                Outcome::Failed => {}
            }
            continue;
        };
        stored.sort_by_key(|d| d.id != e.message_id);
        match e.outcome {
            Outcome::Failed => {
                // Once per request: further copies are counted as duplicated below.
                f.counts.unexpected += 1;
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
        for (i, d) in stored.iter().enumerate() {
            if not_ours && i == 0 {
                continue;
            }
            // A copy under another id is a duplicate; its id is not held against it twice.
            if let Some(why) = corruption(run, e, d, i == 0) {
                f.counts.corrupted += 1;
                f.note("corrupted", example(Some(e), Some(d), why));
            }
        }
        if e.outcome != Outcome::Failed && !not_ours {
            order
                .entry(e.conversation)
                .or_default()
                .push((e, stored[0]));
        }
    }

    // Within a conversation sends were sequential, so the order a reader gets back
    // (`GET /messages/{a}/{b}`: by timestamp, then messageId) must be the sequence order.
    let mut convs: Vec<_> = order.into_iter().collect();
    convs.sort_by_key(|(c, _)| *c);
    for (conv, v) in convs {
        let read: Vec<(&LedgerEntry, Option<&StoredDoc>)> =
            match read_back.and_then(|r| r.get(&conv)) {
                Some(ids) => {
                    let stored: HashMap<&str, (&LedgerEntry, &StoredDoc)> = v
                        .iter()
                        .map(|(e, d)| (e.message_id.as_str(), (*e, *d)))
                        .collect();
                    let mut seen = std::collections::HashSet::new();
                    ids.iter()
                        // A copy shows up again under the same id: counted as duplicated.
                        .filter(|id| seen.insert(id.as_str()))
                        .filter_map(|id| stored.get(id.as_str()).map(|(e, d)| (*e, Some(*d))))
                        .collect()
                }
                None => {
                    let mut by_key: Vec<(&LedgerEntry, &StoredDoc, i64, &str)> = v
                        .into_iter()
                        .filter_map(|(e, d)| {
                            let m = d.message()?;
                            Some((e, d, m.timestamp, m.message_id.as_str()))
                        })
                        .collect();
                    by_key.sort_by(|a, b| (a.2, a.3).cmp(&(b.2, b.3)));
                    by_key
                        .into_iter()
                        .map(|(e, d, _, _)| (e, Some(d)))
                        .collect()
                }
            };
        let source = if read_back.is_some_and(|r| r.contains_key(&conv)) {
            "the API returned"
        } else {
            "by timestamp, a reader gets"
        };
        // Reordered = the messages out of place: all but a longest run read back in
        // sequence order (one message moved far counts once, not once per message it
        // jumped over).
        let seqs: Vec<u64> = read.iter().map(|(e, _)| e.seq).collect();
        let in_order = longest_increasing(&seqs);
        let mut prev: Option<u64> = None;
        for (i, (e, d)) in read.iter().enumerate() {
            if in_order[i] {
                prev = Some(e.seq);
                continue;
            }
            f.counts.reordered += 1;
            let why = match prev {
                Some(p) => format!(
                    "{source} seq {} after seq {p} of the same conversation",
                    e.seq
                ),
                None => format!("{source} seq {} out of sequence order", e.seq),
            };
            f.note("reordered", example(Some(e), *d, why));
        }
    }
    f
}

/// Marks the members of one longest strictly increasing subsequence of `v`
/// (patience sorting, O(n log n)).
fn longest_increasing(v: &[u64]) -> Vec<bool> {
    // tails[k]: index of the smallest tail of an increasing run of length k + 1.
    let mut tails: Vec<usize> = Vec::new();
    let mut parent: Vec<Option<usize>> = vec![None; v.len()];
    for i in 0..v.len() {
        let k = tails.partition_point(|&t| v[t] < v[i]);
        parent[i] = k.checked_sub(1).map(|j| tails[j]);
        if k == tails.len() {
            tails.push(i);
        } else {
            tails[k] = i;
        }
    }
    let mut keep = vec![false; v.len()];
    let mut at = tails.last().copied();
    while let Some(i) = at {
        keep[i] = true;
        at = parent[i];
    }
    keep
}

/// Why a stored document is not what request `e` sent or was acknowledged with, if it
/// is not: users, content, conversation key, message id (`primary`: the copy a reader
/// gets, whose id and timestamp must be the request's), and the timestamp the API
/// answered with. A
/// document that does not decode as a stored message (a field missing or of the wrong
/// type) is corrupted, with the decode error as the reason.
pub(crate) fn corruption(
    run: &str,
    e: &LedgerEntry,
    d: &StoredDoc,
    primary: bool,
) -> Option<String> {
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
    let key = wiber_model::conversation_key(&from, &to);
    if stored.conversation != key {
        return Some(format!(
            "conversation key is {:?}, the users' is {key:?}",
            stored.conversation
        ));
    }
    if primary && stored.message_id != e.message_id {
        return Some(format!(
            "messageId is {:?}, sent {:?}",
            stored.message_id, e.message_id
        ));
    }
    if let Some(acked) = e.acked_timestamp.filter(|_| primary) {
        // A retried request may have been stored by an earlier attempt, accepted (and
        // timestamped) before the attempt whose answer the ledger holds.
        let wrong = if e.attempts <= 1 {
            stored.timestamp != acked
        } else {
            stored.timestamp > acked
        };
        if wrong {
            return Some(format!(
                "timestamp is {}, the API acknowledged {acked}{}",
                stored.timestamp,
                if e.attempts > 1 {
                    " (or earlier, after retries)"
                } else {
                    ""
                }
            ));
        }
    }
    let created = wiber_model::rfc3339_ms(stored.timestamp);
    if stored.created_at != created {
        return Some(format!(
            "createdAt is {:?}, timestamp {} is {created}",
            stored.created_at, stored.timestamp
        ));
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use wiber_model::{Message, StoredMessage};

    use super::*;

    pub(crate) const RUN: &str = "r1";

    pub(crate) fn entry(conv: u32, seq: u64, outcome: Outcome) -> LedgerEntry {
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
            acked_timestamp: None,
            partition: None,
            offset: None,
        }
    }

    pub(crate) fn doc(e: &LedgerEntry, offset: i64) -> StoredDoc {
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
        let f = check(RUN, &entries, &docs, None);
        assert!(f.counts.pass(), "{f:?}");
        assert_eq!(f.counts.stored, 5);
        assert!(f.examples.is_empty());
    }

    #[test]
    fn every_kind_is_named() {
        let mut lost = entry(0, 0, Outcome::Ok);
        // Where the API said Kafka put it: what the lost example must point at.
        (lost.partition, lost.offset) = (Some(2), Some(77));
        let entries = vec![
            lost,                          // lost
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
        let f = check(RUN, &entries, &docs, None);
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
        assert_eq!(
            f.examples["lost"][0].message_id,
            ledger::message_id(RUN, 0, 0)
        );
        assert_eq!(
            (
                f.examples["lost"][0].partition,
                f.examples["lost"][0].offset
            ),
            (Some(2), Some(77))
        );
        assert_eq!(
            f.examples["duplicated"][0].doc_id.as_deref(),
            Some("someone-else")
        );
        assert_eq!(f.examples["corrupted"][0].seq, Some(2));
        // seq 1 (timestamp 10) is read back before seq 0 (timestamp 11): one of the two
        // is out of place.
        assert_eq!(f.examples["reordered"][0].conversation, Some(1));
    }

    /// Each stored field is held to what was sent or acknowledged.
    #[test]
    fn every_field_is_checked() {
        let mut entries: Vec<_> = (0..6).map(|s| entry(0, s, Outcome::Ok)).collect();
        for e in &mut entries {
            e.acked_timestamp = Some(e.seq as i64);
        }
        let mut docs: Vec<_> = entries.iter().map(|e| doc(e, e.seq as i64)).collect();
        assert!(check(RUN, &entries, &docs, None).counts.pass());
        fn m(d: &mut StoredDoc) -> &mut StoredMessage {
            d.stored.as_mut().unwrap()
        }
        m(&mut docs[0]).conversation = "someone\u{1f}else".into();
        m(&mut docs[1]).message_id = "r1-c0-s999999999".into();
        m(&mut docs[2]).timestamp = 2_000; // not what the API answered
        m(&mut docs[3]).created_at = wiber_model::rfc3339_ms(99);
        m(&mut docs[4]).to_user = "mallory".into();
        let f = check(RUN, &entries, &docs, None);
        assert_eq!(f.counts.corrupted, 5, "{f:#?}");
        let details: Vec<&str> = f.examples["corrupted"]
            .iter()
            .map(|e| e.detail.as_str())
            .collect();
        for what in [
            "conversation key",
            "messageId",
            "acknowledged",
            "createdAt",
            "users",
        ] {
            assert!(
                details.iter().any(|d| d.contains(what)),
                "{what}: {details:?}"
            );
        }
        // After retries, an earlier attempt's (earlier) timestamp is fine, a later one not.
        let mut retried = entries[5].clone();
        retried.attempts = 2;
        retried.acked_timestamp = Some(10);
        assert!(check(RUN, &[retried.clone()], &[doc(&retried, 5)], None)
            .counts
            .pass());
        assert_eq!(
            check(RUN, &[retried.clone()], &[doc(&retried, 11)], None)
                .counts
                .corrupted,
            1
        );
    }

    /// `failed` stored counts once as unexpected (copies as duplicated); `unknown`
    /// splits into recovered and indeterminate.
    #[test]
    fn failed_and_unknown_outcomes_are_classified() {
        let entries = vec![
            entry(0, 0, Outcome::Failed),
            entry(0, 1, Outcome::Unknown),
            entry(0, 2, Outcome::Unknown),
            entry(0, 3, Outcome::Unknown),
        ];
        let mut copy = doc(&entries[0], 9);
        copy.id = "copy".into();
        let docs = vec![doc(&entries[0], 0), copy, doc(&entries[1], 1)];
        let c = check(RUN, &entries, &docs, None).counts;
        assert_eq!(
            (c.unexpected, c.duplicated, c.recovered, c.indeterminate),
            (1, 1, 1, 2),
            "{c:?}"
        );
    }

    /// Conversation 0 as the API would return it: the messages of `order`, by seq.
    fn read_back(order: &[u64]) -> BTreeMap<u32, Vec<String>> {
        let v = order
            .iter()
            .map(|s| ledger::message_id(RUN, 0, *s))
            .collect();
        BTreeMap::from([(0, v)])
    }

    /// The API's own order wins over the documents' timestamps when it was read back.
    #[test]
    fn the_order_read_back_through_the_api_is_what_counts() {
        let entries: Vec<_> = (0..3).map(|s| entry(0, s, Outcome::Ok)).collect();
        let docs: Vec<_> = entries.iter().map(|e| doc(e, e.seq as i64)).collect();
        let f = check(RUN, &entries, &docs, Some(&read_back(&[0, 1, 1, 2])));
        assert_eq!(f.counts.reordered, 0, "{f:#?}");
        let f = check(RUN, &entries, &docs, Some(&read_back(&[0, 2, 1])));
        assert_eq!(f.counts.reordered, 1, "{f:#?}");
        let detail = &f.examples["reordered"][0].detail;
        assert!(
            detail.contains("the API returned seq 2 after seq 0"),
            "{detail}"
        );
    }

    /// One message moved far is one reordered message, however many it jumped over.
    #[test]
    fn a_message_moved_far_counts_once() {
        let entries: Vec<_> = (0..10).map(|s| entry(0, s, Outcome::Ok)).collect();
        let docs: Vec<_> = entries.iter().map(|e| doc(e, e.seq as i64)).collect();
        let f = check(
            RUN,
            &entries,
            &docs,
            Some(&read_back(&[9, 0, 1, 2, 3, 4, 5, 6, 7, 8])),
        );
        assert_eq!(f.counts.reordered, 1, "{f:#?}");
        assert_eq!(f.examples["reordered"][0].seq, Some(9));
        let f = check(
            RUN,
            &entries,
            &docs,
            Some(&read_back(&[1, 0, 3, 2, 5, 4, 6, 7, 8, 9])),
        );
        assert_eq!(f.counts.reordered, 3, "{f:#?}");
        assert_eq!(longest_increasing(&[]), Vec::<bool>::new());
        assert_eq!(longest_increasing(&[3, 1, 2]), [false, true, true]);
    }

    /// Two sends accepted in the same millisecond are read back by message id, which
    /// sorts by sequence number.
    #[test]
    fn same_millisecond_sends_are_not_reordered() {
        let entries: Vec<_> = (8..12).map(|s| entry(0, s, Outcome::Ok)).collect();
        let docs: Vec<_> = entries.iter().map(|e| doc(e, 5)).collect();
        let f = check(RUN, &entries, &docs, None);
        assert_eq!(f.counts.reordered, 0, "{f:#?}");
    }

    #[test]
    fn a_document_that_does_not_decode_is_a_finding_not_an_error() {
        let entries: Vec<_> = (0..3).map(|s| entry(0, s, Outcome::Ok)).collect();
        // An acknowledged message whose document was altered so that it no longer
        // decodes: corrupted, with the decode error as the detail.
        let altered = undecodable(doc(&entries[0], 0));
        // A document this run never sent, that does not decode either: unexpected.
        let mut injected = undecodable(doc(&entry(0, 99, Outcome::Ok), 5));
        injected.id = ledger::message_id(RUN, 0, 99);
        let docs = vec![altered, doc(&entries[1], 1), doc(&entries[2], 2), injected];
        let f = check(RUN, &entries, &docs, None);
        let c = f.counts;
        assert_eq!(
            (c.lost, c.duplicated, c.corrupted, c.unexpected, c.reordered),
            (0, 0, 1, 1, 0),
            "{f:#?}"
        );
        let corrupted = &f.examples["corrupted"][0];
        assert_eq!(corrupted.message_id, ledger::message_id(RUN, 0, 0));
        assert!(corrupted.detail.contains("createdAt"), "{corrupted:?}");
        assert_eq!(
            f.examples["unexpected"][0].message_id,
            ledger::message_id(RUN, 0, 99)
        );
    }

    /// What Kafka says turns a `lost` into the class that explains it; without it the
    /// same run counts them lost (and the conflict that replaced a message, corrupted).
    #[test]
    fn kafka_explains_what_the_store_does_not_hold() {
        use super::super::fate::tests::letter;
        use crate::kafka::PartitionLag;

        let mut entries: Vec<_> = (0..7).map(|s| entry(0, s, Outcome::Ok)).collect();
        (entries[4].partition, entries[4].offset) = (Some(1), Some(60)); // stalled
        (entries[5].partition, entries[5].offset) = (Some(1), Some(10)); // lost
        let mut replaced = doc(&entries[3], 3);
        replaced.stored.as_mut().unwrap().content = "someone else's words".into();
        let docs = vec![doc(&entries[2], 2), replaced];

        let mut fates = Fates::new("wiber.messages.dlq");
        fates.set_lags(
            &[PartitionLag {
                partition: 1,
                committed: Some(50),
                low: 0,
                high: 100,
                lag: 50,
                stall: None,
            }],
            0,
        );
        for d in [
            letter(0, "refused", 0, None),
            letter(1, "undecodable", 1, None),
            // Another client reused seq 2's id: its message went to the DLQ, ours is stored.
            letter(2, "conflict", 2, Some("other words")),
            // Ours came second: the store keeps the other's, ours went to the DLQ.
            letter(3, "conflict", 3, None),
            letter(4, "conflict", 6, None),
        ] {
            fates.add(&d, |_| true);
        }

        let without = check(RUN, &entries, &docs, None);
        let c = without.counts;
        assert_eq!(
            (c.lost, c.corrupted, c.dead_lettered, c.stalled, c.conflicts),
            (5, 1, 0, 0, 0),
            "{without:#?}"
        );
        assert!(!c.pass());

        let with = check_with(RUN, &entries, &docs, None, Some(&fates));
        let c = with.counts;
        assert_eq!(
            (c.lost, c.corrupted, c.dead_lettered, c.stalled, c.conflicts),
            (1, 0, 2, 1, 3),
            "{with:#?}"
        );
        assert!(!c.pass(), "each class must be 0");
        let ids =
            |kind: &str| -> Vec<u64> { with.examples[kind].iter().filter_map(|e| e.seq).collect() };
        assert_eq!(ids("dead_lettered"), [0, 1]);
        assert_eq!(ids("conflicts"), [2, 3, 6]);
        assert_eq!(ids("stalled"), [4]);
        assert_eq!(ids("lost"), [5]);
        let detail = |kind: &str, i: usize| with.examples[kind][i].detail.clone();
        assert!(detail("dead_lettered", 0).contains("refused at wiber.messages.dlq@0"));
        assert!(detail("conflicts", 0).starts_with("another message reused"));
        assert!(detail("conflicts", 1).starts_with("the store holds other content"));
        assert!(detail("stalled", 0).contains("committed only to 50"));
        // A letter of a request that is stored (and not as a conflict) changes nothing.
        let mut only_stored = Fates::new("t.dlq");
        only_stored.add(&letter(9, "refused", 2, None), |_| true);
        let f = check_with(RUN, &entries[2..3], &docs[..1], None, Some(&only_stored));
        assert!(f.counts.pass(), "{f:#?}");
    }
}
