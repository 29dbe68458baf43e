//! No input can cost an acknowledged message: generated hostile contents, users and ids
//! against a real stack (Kafka, the api, consumers, FerretDB on PostgreSQL).
//!
//! A seeded generator (fixed seed, a few hundred cases: a failure is seen again with the
//! same inputs) draws strings from every corner that has broken a store or a parser:
//! every C0 and C1 control, U+0000, noncharacters (U+FDD0..U+FDEF, U+xFFFE/U+xFFFF),
//! astral characters, bidi overrides and isolates, zero-width marks, combining marks,
//! Unicode white space, the code points around the surrogate range, and lengths at and
//! around the limits counted in characters of 1 to 4 bytes. Each case is sent as a
//! client would, and:
//! - the API answers exactly what `wiber_model::validate` says: 200 for a valid message,
//!   a JSON 422 naming the offending field otherwise (never a 5xx, never another field);
//! - every 200 is stored and read back through the API byte for byte, within a bound;
//! - nothing this test sent is in the dead-letter topic: what the API acknowledged, the
//!   store could hold.
//!
//! With the API's validation of main before this test (no U+0000 rule), a case holding
//! U+0000 was answered 200, then refused by PostgreSQL: read back never found it (and the
//! consumer of its partitions stalled).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;
use wiber_model::{validate, NewMessage, MAX_CONTENT_CHARS, MAX_MESSAGE_ID_CHARS, MAX_USER_CHARS};

/// Fixed: the same cases every run.
const SEED: u64 = 0x5EED_2026_1207;
const CASES: usize = 300;

/// xorshift64*: small, dependency-free, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// Ranges of code points, one per category the generator draws from.
const CATEGORIES: &[(&str, u32, u32)] = &[
    ("ascii", 0x20, 0x7e),
    ("c0 control", 0x01, 0x1f),
    ("nul", 0x00, 0x00),
    ("del and c1", 0x7f, 0x9f),
    ("latin-1", 0xa0, 0xff),
    ("combining", 0x0300, 0x036f),
    ("rtl letters", 0x05d0, 0x05ea),
    ("bidi marks", 0x200e, 0x200f),
    ("bidi embeddings", 0x202a, 0x202e),
    ("bidi isolates", 0x2066, 0x2069),
    ("zero width", 0x200b, 0x200d),
    ("white space", 0x2000, 0x200a),
    ("line/para separators", 0x2028, 0x2029),
    ("bom", 0xfeff, 0xfeff),
    ("cjk", 0x4e00, 0x4e80),
    ("around surrogates", 0xd7f0, 0xd7ff),
    ("private use", 0xe000, 0xe010),
    ("noncharacters", 0xfdd0, 0xfdef),
    ("bmp end", 0xfff0, 0xffff),
    ("emoji", 0x1f300, 0x1f64f),
    ("astral nonchar", 0x1fffe, 0x1ffff),
    ("plane 16 end", 0x10fff0, 0x10ffff),
];

fn draw_char(rng: &mut Rng, cats: &[usize]) -> char {
    let (_, lo, hi) = CATEGORIES[*rng.pick(cats)];
    let c = lo + rng.below(u64::from(hi - lo + 1)) as u32;
    char::from_u32(c).unwrap_or('?')
}

/// A string of `len` characters drawn from a few categories.
fn draw(rng: &mut Rng, len: usize, allow_nul: bool) -> String {
    let k = 1 + rng.below(3) as usize;
    let cats: Vec<usize> = (0..k)
        .map(|_| rng.below(CATEGORIES.len() as u64) as usize)
        .filter(|&i| allow_nul || CATEGORIES[i].0 != "nul")
        .collect();
    let cats = if cats.is_empty() { vec![0] } else { cats };
    (0..len).map(|_| draw_char(rng, &cats)).collect()
}

/// A length near `limit` or small, in characters.
fn draw_len(rng: &mut Rng, limit: usize) -> usize {
    match rng.below(6) {
        0 => limit,
        1 => limit + 1,
        2 => limit - 1,
        _ => 1 + rng.below(24) as usize,
    }
}

/// One case: a body, and the field the API must name if it refuses it.
fn case(rng: &mut Rng, run: &str, i: usize) -> NewMessage {
    // Mostly the content is the hostile part; sometimes the users or the id are.
    let which = rng.below(10);
    let (from, to) = (format!("hi-{run}-{i}a"), format!("hi-{run}-{i}b"));
    let len = draw_len(rng, MAX_CONTENT_CHARS).min(64);
    let mut m = NewMessage {
        from_user: from,
        to_user: to,
        content: draw(rng, len, true),
        message_id: Some(format!("hi-{run}-{i}")),
    };
    match which {
        0 => {
            // At and around the content limit, in characters of several sizes.
            let len = draw_len(rng, MAX_CONTENT_CHARS);
            let len = if len < 100 { MAX_CONTENT_CHARS } else { len };
            m.content = draw(rng, len, false);
        }
        1 => m.from_user = format!("{}{}", draw(rng, 3, true), i),
        2 => {
            let len = draw_len(rng, MAX_USER_CHARS);
            m.to_user = draw(rng, len, false);
        }
        3 => {
            let len = draw_len(rng, MAX_MESSAGE_ID_CHARS);
            m.message_id = Some(draw(rng, len, true));
        }
        _ => {}
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_strings_are_stored_byte_for_byte_or_refused_naming_the_field() {
    let stack = start_stack("hostile", 2, &[]).await;
    let api = stack.api_url();
    let http = http();
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut rng = Rng(SEED);
    let mut accepted: Vec<NewMessage> = Vec::new();
    let mut refused: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for i in 0..CASES {
        let m = case(&mut rng, run, i);
        let (status, body) = post(
            &http,
            &api,
            json!({"fromUser": m.from_user, "toUser": m.to_user, "content": m.content,
                   "messageId": m.message_id}),
        )
        .await;
        match (validate(&m), status) {
            (Ok(()), 200) => {
                assert_eq!(
                    body["content"],
                    Value::String(m.content.clone()),
                    "echo of case {i}"
                );
                accepted.push(m);
            }
            (Err(e), 422) if body["field"] == e.field && body["error"] == "validation_failed" => {
                *refused.entry(e.field).or_default() += 1;
            }
            (expected, _) => wrong.push(format!(
                "case {i} ({:?}): expected {expected:?}, the API answered {status} {body}",
                m.content.chars().take(20).collect::<String>()
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cases answered wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        accepted.len() >= CASES / 2 && refused.values().sum::<usize>() >= CASES / 10,
        "the generator should draw both: {} accepted, refused {refused:?}",
        accepted.len()
    );
    assert!(
        refused.contains_key("content"),
        "some content refused (U+0000): {refused:?}"
    );

    // Every acknowledged message is read back through the API, byte for byte, in bounded
    // time (through the page reads in SQL that clients use).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<String> = Vec::new();
    for m in &accepted {
        let url = format!(
            "{api}/messages/{}/{}",
            urlencode(&m.from_user),
            urlencode(&m.to_user)
        );
        loop {
            let (s, v) = get(&http, &url).await;
            assert_eq!(s, 200, "read of {url}: {v}");
            let found = v.as_array().and_then(|a| {
                a.iter()
                    .find(|d| d["messageId"] == json!(m.message_id))
                    .cloned()
            });
            match found {
                Some(d) => {
                    assert_eq!(
                        d["content"].as_str().map(str::as_bytes),
                        Some(m.content.as_bytes()),
                        "{:?} came back altered",
                        m.message_id
                    );
                    assert_eq!(d["fromUser"], json!(m.from_user));
                    assert_eq!(d["toUser"], json!(m.to_user));
                    break;
                }
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                None => {
                    missing.push(m.message_id.clone().unwrap_or_default());
                    break;
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged messages were never stored: {missing:?}",
        missing.len()
    );

    // And none of them went to the dead-letter topic.
    let dead = wiberctl::kafka::dlq::read_all(
        &stack.bootstrap(),
        "wiber.messages.dlq",
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_default();
    let ours: Vec<_> = dead
        .iter()
        .filter(|d| d.message_id.as_deref().is_some_and(|id| id.contains(run)))
        .map(|d| (d.message_id.clone(), d.reason.clone()))
        .collect();
    assert!(
        ours.is_empty(),
        "acknowledged, then dead-lettered: {ours:?}"
    );
    eprintln!(
        "{CASES} cases: {} acknowledged and read back byte for byte, refused by field {refused:?}",
        accepted.len()
    );
}

/// Percent-encodes a path segment (every byte that is not unreserved).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_generator_draws_every_category_and_the_limits() {
    let mut rng = Rng(SEED);
    let run = "t";
    let cases: Vec<NewMessage> = (0..CASES).map(|i| case(&mut rng, run, i)).collect();
    let all: String = cases
        .iter()
        .flat_map(|m| [m.content.as_str(), m.from_user.as_str(), m.to_user.as_str()])
        .collect();
    for (name, lo, hi) in CATEGORIES {
        assert!(
            all.chars().any(|c| (*lo..=*hi).contains(&(c as u32))),
            "no character of {name} drawn"
        );
    }
    let lens: Vec<usize> = cases.iter().map(|m| m.content.chars().count()).collect();
    for want in [MAX_CONTENT_CHARS, MAX_CONTENT_CHARS + 1] {
        assert!(lens.contains(&want), "no content of {want} characters");
    }
    assert!(cases.iter().any(|m| m.content.contains('\u{0}')));
}
