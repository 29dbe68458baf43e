//! What lets the final verify check an hour-long run without holding it in memory.
//!
//! The invariants are per request (lost, corrupted), per request and its copies
//! (duplicated) and per conversation (reordered), so the run splits into buckets of
//! conversations that are checked one at a time by the same pure
//! [`super::check::check`]: the ledger is streamed once into a file per bucket, every
//! document the store gives is written to the file of the bucket of the request it
//! belongs to, and then each bucket is read back, checked, and let go. What stays in
//! memory for the whole run is a bit per request ([`super::index`]): which
//! requests the ledger holds and which of them a read already found.
//!
//! A document is attributed exactly as the check attributes it (its `messageId`, else
//! its `_id`, else the `run:conv:seq` its content starts with, each only when the ledger
//! holds that request), so a bucket holds every document the check would pair with its
//! requests; one attributable to no request is counted unexpected on the spot.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use mongodb::bson::Document;
use wiber_model::ledger::{self, LedgerEntry};

use super::check::{self, Findings};
use super::index::LedgerIndex;
use super::store::{self, StoredDoc};

/// Buckets at most: each holds its files open while the run is read.
pub const MAX_BUCKETS: u32 = 64;

/// The conversation whose bucket a document goes to: that of the request the check
/// pairs it with ([`super::check::check`]'s order: `messageId` (else `_id`), then `_id`,
/// then the content's key), or `None` when it names no request of the ledger.
pub fn attribute(index: &LedgerIndex, d: &StoredDoc) -> Option<u32> {
    let by_id = |id: &str| index.request_of_id(id).map(|(c, _)| c);
    by_id(d.message_id.as_deref().unwrap_or(&d.id))
        .or_else(|| by_id(&d.id))
        .or_else(|| {
            let (r, conv, seq) = ledger::parse_content_key(d.content()?)?;
            (r == index.run() && index.holds(conv, seq)).then_some(conv)
        })
}

/// Calls `f` with each line of the ledger at `path` and its entry, reading line by line.
/// A torn last line (a run killed mid-write) is skipped; an earlier line that does not
/// parse is an error.
pub fn for_each_entry(
    path: &Path,
    mut f: impl FnMut(&str, LedgerEntry) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file =
        File::open(path).with_context(|| format!("cannot open the ledger {}", path.display()))?;
    let mut bad: Option<(usize, serde_json::Error)> = None;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read the ledger {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        if let Some((n, e)) = bad.take() {
            return Err(e).with_context(|| format!("{}:{n}: not a ledger line", path.display()));
        }
        match serde_json::from_str::<LedgerEntry>(&line) {
            Ok(e) => f(&line, e)?,
            Err(e) => bad = Some((i + 1, e)),
        }
    }
    Ok(())
}

/// The run split into buckets of conversations on disk, under a directory removed when
/// this is dropped.
pub struct Spill {
    dir: PathBuf,
    ledgers: Vec<BufWriter<File>>,
    docs: Vec<BufWriter<File>>,
}

impl Spill {
    /// `buckets` files of each kind under `dir` (made empty first).
    pub fn create(dir: &Path, buckets: u32) -> anyhow::Result<Spill> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create verify's work directory {}", dir.display()))?;
        let open = |name: String| {
            let p = dir.join(name);
            File::create(&p)
                .map(BufWriter::new)
                .with_context(|| format!("cannot create {}", p.display()))
        };
        let n = buckets.clamp(1, MAX_BUCKETS);
        Ok(Spill {
            dir: dir.to_path_buf(),
            ledgers: (0..n)
                .map(|b| open(format!("ledger-{b}.jsonl")))
                .collect::<Result<_, _>>()?,
            docs: (0..n)
                .map(|b| open(format!("docs-{b}.bson")))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn buckets(&self) -> u32 {
        self.ledgers.len() as u32
    }

    fn bucket(&self, conv: u32) -> usize {
        (conv % self.buckets()) as usize
    }

    /// Streams `ledger.jsonl` into the buckets and returns its index. A torn last line
    /// (a run killed mid-write) is skipped.
    pub fn ledger(&mut self, path: &Path, run: &str) -> anyhow::Result<LedgerIndex> {
        let mut index = LedgerIndex::new(run);
        for_each_entry(path, |line, e| {
            index.add(&e);
            let b = self.bucket(e.conversation);
            writeln!(self.ledgers[b], "{line}").with_context(|| self.write_error())
        })?;
        Ok(index)
    }

    /// Puts a document read from the store in the bucket of its request; one of no
    /// request of the run is counted unexpected in `f`.
    pub fn doc(
        &mut self,
        index: &LedgerIndex,
        d: Document,
        f: &mut Findings,
    ) -> anyhow::Result<()> {
        let mut bytes = Vec::new();
        d.to_writer(&mut bytes)
            .context("cannot encode a stored document")?;
        let stored = store::to_stored(d, true);
        match attribute(index, &stored) {
            Some(conv) => {
                let b = self.bucket(conv);
                self.docs[b]
                    .write_all(&bytes)
                    .with_context(|| self.write_error())
            }
            None => {
                f.counts.stored += 1;
                check::note_unexpected(f, &stored);
                Ok(())
            }
        }
    }

    /// Flushes the files: every bucket can be read from here on.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        for w in self.ledgers.iter_mut().chain(self.docs.iter_mut()) {
            w.flush()
                .with_context(|| format!("cannot write under {}", self.dir.display()))?;
        }
        Ok(())
    }

    /// Bucket `b`'s requests and documents.
    pub fn read(&self, b: u32) -> anyhow::Result<(Vec<LedgerEntry>, Vec<StoredDoc>)> {
        let lp = self.dir.join(format!("ledger-{b}.jsonl"));
        let mut entries = Vec::new();
        for line in BufReader::new(
            File::open(&lp).with_context(|| format!("cannot open {}", lp.display()))?,
        )
        .lines()
        {
            let line = line.with_context(|| format!("cannot read {}", lp.display()))?;
            entries.push(
                serde_json::from_str(&line)
                    .with_context(|| format!("{}: not a ledger line", lp.display()))?,
            );
        }
        let dp = self.dir.join(format!("docs-{b}.bson"));
        let mut r = BufReader::new(
            File::open(&dp).with_context(|| format!("cannot open {}", dp.display()))?,
        );
        let mut docs = Vec::new();
        while !r
            .fill_buf()
            .with_context(|| format!("cannot read {}", dp.display()))?
            .is_empty()
        {
            let d = Document::from_reader(&mut r)
                .with_context(|| format!("{}: not a document", dp.display()))?;
            docs.push(store::to_stored(d, true));
        }
        Ok((entries, docs))
    }

    fn write_error(&self) -> String {
        format!(
            "cannot write under {} (is the disk full?)",
            self.dir.display()
        )
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The same run checked whole and bucket by bucket finds the same: documents
    /// attributed by `messageId`, by `_id` and by content, copies, documents of no
    /// request, corruption and disorder, spread over conversations of several buckets.
    #[test]
    fn a_run_checked_by_buckets_finds_what_it_finds_whole() {
        use super::super::check::tests::{doc, entry, RUN};
        use mongodb::bson;
        use wiber_model::ledger::Outcome;

        let mut entries = Vec::new();
        for conv in 0..7 {
            for seq in 0..5 {
                let outcome = match (conv + seq) % 7 {
                    5 => Outcome::Failed,
                    6 => Outcome::Unknown,
                    _ => Outcome::Ok,
                };
                entries.push(entry(conv, seq as u64, outcome));
            }
        }
        let as_bson = |d: &StoredDoc| {
            let mut b = bson::to_document(d.message().expect("decodes")).unwrap();
            b.insert("_id", d.id.clone());
            if let Some(m) = &d.message_id {
                b.insert("messageId", m.clone());
            }
            b
        };
        let mut docs: Vec<Document> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            // Lost: (0, 1) and (3, 4) never stored; (2, 1) stored so it does not decode
            // (below); failed requests not stored, but for (4, 1).
            let key = (e.conversation, e.seq);
            if [(0, 1), (3, 4), (2, 1)].contains(&key)
                || (e.outcome == Outcome::Failed && key != (4, 1))
            {
                continue;
            }
            let mut d = as_bson(&doc(e, 1_000 + i as i64));
            if (e.conversation, e.seq) == (4, 2) {
                d.insert("timestamp", 1_000i64); // read before seq 0 and 1: reordered
            }
            if (e.conversation, e.seq) == (5, 3) {
                d.insert("content", "r1:5:3|tampered"); // corrupted
            }
            docs.push(d);
        }
        // A copy of (1, 2) under another _id; one of (6, 0) known only by its content,
        // under ids of no request; a document of no request at all; one that does not
        // decode, under the id of (2, 1).
        let mut copy = as_bson(&doc(&entries[7], 5));
        copy.insert("_id", "copy-1");
        docs.push(copy);
        let mut by_content = as_bson(&doc(&entries[30], 6));
        by_content.insert("_id", "elsewhere");
        by_content.insert("messageId", "elsewhere");
        docs.push(by_content);
        docs.push(mongodb::bson::doc! {"_id": "stray", "content": "hello"});
        docs.push(mongodb::bson::doc! {"_id": ledger::message_id(RUN, 2, 1), "content": 7});

        let stored: Vec<StoredDoc> = docs
            .iter()
            .map(|d| store::to_stored(d.clone(), true))
            .collect();
        let whole = check::check(RUN, &entries, &stored, None);

        let dir = std::env::temp_dir().join(format!("wiber-spill-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ledger_path = dir.join("ledger.jsonl");
        let lines: Vec<String> = entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        // A torn last line, as a run killed mid-write leaves it: skipped.
        std::fs::write(&ledger_path, lines.join("\n") + "\n{\"messageId\":").unwrap();
        let mut spill = Spill::create(&dir.join("work"), 3).unwrap();
        let index = spill.ledger(&ledger_path, RUN).unwrap();
        let mut found = Findings::default();
        for d in docs {
            spill.doc(&index, d, &mut found).unwrap();
        }
        spill.finish().unwrap();
        for b in 0..spill.buckets() {
            let (entries, docs) = spill.read(b).unwrap();
            assert!(entries.iter().all(|e| e.conversation % 3 == b));
            found.merge(check::check(RUN, &entries, &docs, None));
        }
        drop(spill);
        assert!(!dir.join("work").exists(), "the buckets are removed");
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(found.counts, whole.counts);
        let c = &whole.counts;
        assert_eq!(
            (c.lost, c.duplicated, c.unexpected, c.corrupted, c.reordered),
            (2, 2, 2, 3, 1),
            "every kind is in the run: {c:?}"
        );
        let ids = |f: &Findings| -> BTreeMap<String, Vec<String>> {
            f.examples
                .iter()
                .map(|(k, v)| {
                    let mut ids: Vec<String> = v.iter().map(|x| x.message_id.clone()).collect();
                    ids.sort();
                    (k.clone(), ids)
                })
                .collect()
        };
        assert_eq!(ids(&found), ids(&whole));
    }
}
