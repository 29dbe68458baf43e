//! Compact sets of a run's requests, a bit each: which requests the ledger holds, and
//! which `_id`s a read of the store already found. What verify keeps of a run for its
//! whole length (the rest streams: `spill`).

use std::collections::{HashMap, HashSet};

use wiber_model::ledger::{self, LedgerEntry};

/// A set of (conversation, seq) pairs as a bit per seq: requests of one run are numbered
/// densely from 0 within each conversation, so 144,000 requests take 18 KB.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    bits: HashMap<u32, Vec<u64>>,
    len: u64,
}

impl SeqSet {
    /// Adds (conv, seq); `true` when it was not there yet.
    pub fn insert(&mut self, conv: u32, seq: u64) -> bool {
        let words = self.bits.entry(conv).or_default();
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if words.len() <= w {
            words.resize(w + 1, 0);
        }
        let new = words[w] & (1 << b) == 0;
        words[w] |= 1 << b;
        self.len += u64::from(new);
        new
    }

    pub fn contains(&self, conv: u32, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        self.bits
            .get(&conv)
            .and_then(|words| words.get(w))
            .is_some_and(|word| word & (1 << b) != 0)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every pair, conversation by conversation.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let mut convs: Vec<_> = self.bits.iter().collect();
        convs.sort_by_key(|(c, _)| **c);
        convs.into_iter().flat_map(|(c, words)| {
            words.iter().enumerate().flat_map(move |(w, word)| {
                (0..64u64)
                    .filter(move |b| word & (1 << b) != 0)
                    .map(move |b| (*c, w as u64 * 64 + b))
            })
        })
    }
}

/// Which requests a run's ledger holds, a bit each; ledger ids not in the form
/// [`ledger::message_id`] gives (a ledger from elsewhere) are kept whole.
#[derive(Debug, Default, Clone)]
pub struct LedgerIndex {
    run: String,
    requests: SeqSet,
    other: HashMap<String, (u32, u64)>,
    /// Every (conversation, seq) the ledger holds, whatever its id's form.
    named: SeqSet,
    /// One more than the highest conversation the ledger names.
    conversations: u32,
}

impl LedgerIndex {
    pub fn new(run: &str) -> LedgerIndex {
        LedgerIndex {
            run: run.to_string(),
            ..Default::default()
        }
    }

    pub fn add(&mut self, e: &LedgerEntry) {
        self.conversations = self.conversations.max(e.conversation.saturating_add(1));
        self.named.insert(e.conversation, e.seq);
        if canonical(&self.run, &e.message_id) == Some((e.conversation, e.seq)) {
            self.requests.insert(e.conversation, e.seq);
        } else {
            self.other
                .insert(e.message_id.clone(), (e.conversation, e.seq));
        }
    }

    pub fn run(&self) -> &str {
        &self.run
    }

    pub fn conversations(&self) -> u32 {
        self.conversations
    }

    /// The request a ledger id names, if the ledger holds it.
    pub fn request_of_id(&self, id: &str) -> Option<(u32, u64)> {
        self.held_canonical(id)
            .or_else(|| self.other.get(id).copied())
    }

    /// The request `id` names when it is of the canonical form and the ledger holds it.
    fn held_canonical(&self, id: &str) -> Option<(u32, u64)> {
        canonical(&self.run, id).filter(|(c, s)| self.requests.contains(*c, *s))
    }

    /// The request (conversation, seq) names, if the ledger holds it.
    pub fn holds(&self, conv: u32, seq: u64) -> bool {
        self.named.contains(conv, seq)
    }

    /// The ledger's message ids that `found` does not hold.
    pub fn ids_not_in<'a>(&'a self, found: &'a FoundIds) -> impl Iterator<Item = String> + 'a {
        let canonical = self
            .requests
            .iter()
            .filter(|(c, s)| !found.requests.contains(*c, *s))
            .map(|(c, s)| ledger::message_id(&self.run, c, s));
        let other = self
            .other
            .keys()
            .filter(|id| !found.other.contains(id.as_str()))
            .cloned();
        canonical.chain(other)
    }
}

/// `id` read as [`ledger::message_id`] of run `run`, only when it is exactly that form
/// (so it names the request the check would pair it with by string equality).
fn canonical(run: &str, id: &str) -> Option<(u32, u64)> {
    let (c, s) = ledger::parse_message_id(run, id)?;
    (ledger::message_id(run, c, s) == id).then_some((c, s))
}

/// `_id`s a read has found: a bit per id the ledger holds, the others whole (few: what
/// the run never sent).
#[derive(Debug, Default)]
pub struct FoundIds {
    requests: SeqSet,
    other: HashSet<String>,
}

impl FoundIds {
    /// Records `id`; `true` when it was not found before.
    pub fn insert(&mut self, index: Option<&LedgerIndex>, id: &str) -> bool {
        match index.and_then(|i| i.held_canonical(id)) {
            Some((c, s)) => self.requests.insert(c, s),
            None => self.other.insert(id.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seq_set_holds_a_bit_per_request() {
        let mut s = SeqSet::default();
        assert!(s.insert(3, 0) && s.insert(3, 64) && s.insert(0, 200));
        assert!(!s.insert(3, 64), "already there");
        assert!(s.contains(3, 64) && !s.contains(3, 63) && !s.contains(1, 0));
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![(0, 200), (3, 0), (3, 64)]
        );
    }

    #[test]
    fn only_an_id_of_exactly_the_ledger_form_names_a_request() {
        let mut i = LedgerIndex::new("r1");
        let e = |conv, seq, id: &str| LedgerEntry {
            message_id: id.to_string(),
            run: "r1".into(),
            conversation: conv,
            seq,
            due: 0,
            sent: None,
            answered: 0,
            outcome: ledger::Outcome::Ok,
            status: None,
            error: None,
            acked_timestamp: None,
            partition: None,
            offset: None,
            attempts: 1,
            size: 1,
            content_hash: String::new(),
            warmup: false,
            step: 0,
        };
        i.add(&e(2, 5, &ledger::message_id("r1", 2, 5)));
        i.add(&e(7, 1, "foreign-id"));
        assert_eq!(
            i.request_of_id(&ledger::message_id("r1", 2, 5)),
            Some((2, 5))
        );
        assert_eq!(
            i.request_of_id("r1-c2-s5"),
            None,
            "unpadded: not the string the check matches"
        );
        assert_eq!(
            i.request_of_id(&ledger::message_id("r1", 2, 6)),
            None,
            "never sent"
        );
        assert_eq!(i.request_of_id("foreign-id"), Some((7, 1)));
        assert!(i.holds(7, 1) && i.holds(2, 5) && !i.holds(2, 6));
        assert_eq!(i.conversations(), 8);

        let mut found = FoundIds::default();
        assert!(found.insert(Some(&i), &ledger::message_id("r1", 2, 5)));
        assert!(!found.insert(Some(&i), &ledger::message_id("r1", 2, 5)));
        assert!(
            found.insert(Some(&i), "r1-c2-s5"),
            "another _id, kept whole"
        );
        assert_eq!(
            i.ids_not_in(&found).collect::<Vec<_>>(),
            vec!["foreign-id".to_string()]
        );
    }
}
