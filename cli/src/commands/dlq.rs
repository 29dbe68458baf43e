//! `wiberctl dlq list|show|replay`: the dead-letter topic, for an operator. Flags →
//! [`crate::kafka::dlq`], then the rendering.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;
use wiber_model::contract::dlq::Class;
use wiber_model::contract::{defaults, env};

use super::args::StackArgs;
use crate::exit::{self, Exit};
use crate::kafka::dlq::{self, DeadLetter, Delivered, DlqPos, RawProducer};
use crate::output;
use crate::runtime::Stack;
use crate::verify::store::DEFAULT_KAFKA;

pub const ABOUT: &str =
    "A record the consumers cannot store for good (the store refuses it, it is \
not a wiber message, or its messageId is stored with other content) is not retried forever: it \
goes to the dead-letter topic (<topic>.dlq), the original key and payload byte for byte, with \
headers saying why (class, reason) and where it came from (source partition@offset). Its offset \
is then committed, so the records behind it are stored. These commands read that topic (with an \
assign-only consumer: no group is joined, nothing is committed) and put records back.

Classes: undecodable (not a wiber message), refused (the store refused it: retrying cannot \
help until the store or the data is fixed), conflict (its messageId is stored with other \
content: an id reused by a client; the stored message stays).

Where: --bootstrap/--topic win; otherwise the stack of --project is asked for its endpoints; \
otherwise the defaults of `stack up` (127.0.0.1:9094, wiber.messages).

Exit codes: 0 done; 1 nothing there (`show` of an offset the topic does not hold, `replay` \
of offsets it does not hold or a selection that matches nothing); 2 Kafka unreachable, the \
dead-letter topic missing, a replay not acknowledged, bad flags.";

#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// One row per dead letter: offset, class, source partition@offset, messageId, from → to, when, why.
    #[command(
        after_help = "--json: {\"topic\", \"partitions\": [{\"partition\", \"low\", \"high\"}], \
\"records\", \"matched\", \"dead_letters\": [{\"dlq\" (as show and replay take it), \"dlq_partition\", \"dlq_offset\", \"class\", \"source_topic\", \"source_partition\", \
\"source_offset\", \"message_id\", \"from_user\", \"to_user\", \"dead_lettered_at\", \"reason\", \
\"replayed_from\"}]}

Examples:
  wiberctl dlq list
  wiberctl dlq list --class refused --limit 20
  wiberctl dlq list --json | jq -r '.dead_letters[].message_id'"
    )]
    List(ListArgs),
    /// Everything about one dead letter: its headers, key and payload.
    #[command(
        after_help = "DLQ-OFFSET as `dlq list` shows it: an offset (partition 0, the only \
one the consumers create) or partition@offset.

--json: a `dlq list` row plus \"key\", \"headers\" {name: value}, \"payload\" (as text), \
\"message\" (the payload decoded, or null) and \"decode_error\".

Exit 1 when the topic holds no record at that offset.

Examples:
  wiberctl dlq show 0
  wiberctl dlq show 0@12 --json | jq .message"
    )]
    Show(ShowArgs),
    /// Re-publish dead letters to the message topic: original key and payload, unchanged.
    #[command(
        after_help = "Each record is produced to the message topic (--to-topic) with its \
original key and payload byte for byte, so it keeps its messageId: once the cause is fixed, the \
consumers store it once, and a record replayed twice (or already stored) is de-duplicated by \
`_id`. It carries the header wiber-replayed-from = its DLQ offset. acks=all, idempotent \
producer; each replay waits for Kafka's acknowledgement and says where it went. The dead \
letter stays in the DLQ (the topic is a log); a replay that fails again comes back as a new one.

A conflict replayed is dead-lettered again unless the message stored under its id was removed.

--json: {\"to_topic\", \"dry_run\", \"replayed\": [{\"dlq\", \"message_id\", \"class\", \
\"delivered\": {\"topic\", \"partition\", \"offset\"} (null with --dry-run)}]}

Examples:
  wiberctl dlq replay 3 7               # two records, by their DLQ offsets
  wiberctl dlq replay --class refused --dry-run
  wiberctl dlq replay --all --json"
    )]
    Replay(ReplayArgs),
}

/// Where the dead-letter topic is, as every `dlq` subcommand takes it.
#[derive(Debug, Clone, Args)]
pub struct Where {
    /// Kafka bootstrap servers (default: the stack's, else 127.0.0.1:9094).
    #[arg(long, env = env::KAFKA_BOOTSTRAP_SERVERS, value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    /// The message topic (default: the stack's); replays go to it.
    #[arg(long, env = env::KAFKA_TOPIC)]
    pub topic: Option<String>,
    /// The dead-letter topic (default: <topic>.dlq).
    #[arg(long, env = env::KAFKA_DLQ_TOPIC)]
    pub dlq_topic: Option<String>,
    #[command(flatten)]
    pub stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only dead letters of this class: undecodable, refused or conflict.
    #[arg(long, value_parser = parse_class)]
    pub class: Option<Class>,
    /// Show at most the newest N (listed oldest first).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub limit: usize,
    /// Characters of the reason shown per row (the JSON holds all of it).
    #[arg(long, default_value_t = 60, value_name = "CHARS")]
    pub reason_width: usize,
    #[command(flatten)]
    pub at: Where,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The dead letter's offset in the DLQ, as `dlq list` shows it (N or PARTITION@N).
    #[arg(value_name = "DLQ-OFFSET")]
    pub pos: DlqPos,
    #[command(flatten)]
    pub at: Where,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["pos", "all", "class"])))]
pub struct ReplayArgs {
    /// DLQ offsets of the records to replay, as `dlq list` shows them.
    #[arg(value_name = "DLQ-OFFSET")]
    pub pos: Vec<DlqPos>,
    /// Every dead letter in the topic.
    #[arg(long, conflicts_with = "pos")]
    pub all: bool,
    /// Every dead letter of this class (with offsets: only those of the class).
    #[arg(long, value_parser = parse_class)]
    pub class: Option<Class>,
    /// Say what would be replayed, produce nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where replays go (default: the message topic, --topic or the stack's).
    #[arg(long, value_name = "TOPIC")]
    pub to_topic: Option<String>,
    #[command(flatten)]
    pub at: Where,
}

fn parse_class(s: &str) -> Result<Class, String> {
    s.parse()
}

/// The addresses a subcommand works with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    bootstrap: String,
    topic: String,
    dlq_topic: String,
}

/// A flag, else the stack's value, else the default.
fn resolve(w: &Where, stack: Option<(Option<String>, String)>) -> Resolved {
    let (kafka, topic) = match stack {
        Some((k, t)) => (k, Some(t)),
        None => (None, None),
    };
    let bootstrap = w
        .bootstrap
        .clone()
        .or(kafka)
        .unwrap_or_else(|| DEFAULT_KAFKA.to_string());
    let topic = w
        .topic
        .clone()
        .or(topic)
        .unwrap_or_else(|| defaults::TOPIC.to_string());
    let dlq_topic = w.dlq_topic.clone().unwrap_or_else(|| dlq::topic_of(&topic));
    Resolved {
        bootstrap,
        topic,
        dlq_topic,
    }
}

/// Asks the stack only for what the flags leave open; no stack is not an error (the
/// defaults are where `stack up` publishes), but it is said.
async fn locate(w: &Where) -> anyhow::Result<Resolved> {
    if w.bootstrap.is_some() && (w.topic.is_some() || w.dlq_topic.is_some()) {
        return Ok(resolve(w, None));
    }
    let stack = match Stack::open(&w.stack.locator()).await {
        Ok(stack) => {
            let ep = stack.endpoints().await.with_context(|| {
                format!(
                    "cannot read the endpoints of stack {:?} (give --bootstrap and --topic)",
                    w.stack.project
                )
            })?;
            Some((ep.kafka_bootstrap, ep.names.topic))
        }
        Err(e) => {
            eprintln!(
                "dlq: {e:#}; trying the defaults (set --bootstrap, or --project / --runtime)"
            );
            None
        }
    };
    Ok(resolve(w, stack))
}

pub async fn run(cmd: DlqCmd, timeout: Duration, json: bool) -> anyhow::Result<Exit> {
    match cmd {
        DlqCmd::List(a) => list(a, timeout, json).await,
        DlqCmd::Show(a) => show(a, timeout, json).await,
        DlqCmd::Replay(a) => replay(a, timeout, json).await,
    }
}

/// One dead letter as `list` shows it (and `show` starts with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Row {
    /// `N` or `P@N`, as `show` and `replay` take it.
    dlq: String,
    dlq_partition: i32,
    dlq_offset: i64,
    class: Option<Class>,
    source_topic: Option<String>,
    source_partition: Option<i32>,
    source_offset: Option<i64>,
    message_id: Option<String>,
    from_user: Option<String>,
    to_user: Option<String>,
    /// RFC 3339, UTC.
    dead_lettered_at: Option<String>,
    reason: Option<String>,
    replayed_from: Option<String>,
    #[serde(skip)]
    source: String,
}

impl Row {
    fn of(d: &DeadLetter) -> Row {
        let m = d.message.as_ref().ok();
        Row {
            dlq: d.pos.to_string(),
            dlq_partition: d.pos.partition,
            dlq_offset: d.pos.offset,
            class: d.class,
            source_topic: d.source_topic.clone(),
            source_partition: d.source_partition,
            source_offset: d.source_offset,
            message_id: d.message_id.clone(),
            from_user: m.map(|m| m.from_user.clone()),
            to_user: m.map(|m| m.to_user.clone()),
            dead_lettered_at: d.dead_lettered_at_ms.map(wiber_model::rfc3339_ms),
            reason: d.reason.clone(),
            replayed_from: d.replayed_from.clone(),
            source: d.source(),
        }
    }

    /// The cells of the text table, the reason cut to `width` characters.
    fn cells(&self, width: usize) -> Vec<String> {
        let dash = || "-".to_string();
        vec![
            self.dlq.clone(),
            self.class.map_or("?".into(), |c| c.name().to_string()),
            self.source.clone(),
            self.message_id.clone().unwrap_or_else(dash),
            match (&self.from_user, &self.to_user) {
                (Some(f), Some(t)) => format!("{f} → {t}"),
                _ => dash(),
            },
            self.dead_lettered_at
                .as_deref()
                .map(|t| t.replace('T', " ").trim_end_matches('Z').to_string())
                .unwrap_or_else(dash),
            self.reason
                .as_deref()
                .map(|r| cut(r, width))
                .unwrap_or_else(dash),
        ]
    }
}

/// `s` on one line, at most `width` characters (an ellipsis says it was cut).
fn cut(s: &str, width: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= width {
        return one_line;
    }
    let mut out: String = one_line.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Keeps the newest `limit` of what it is given (bounded memory, whatever the topic holds).
struct Newest<T> {
    limit: usize,
    items: VecDeque<T>,
}

impl<T> Newest<T> {
    fn new(limit: usize) -> Newest<T> {
        Newest {
            limit,
            items: VecDeque::new(),
        }
    }

    fn push(&mut self, t: T) {
        if self.limit == 0 {
            return;
        }
        if self.items.len() == self.limit {
            self.items.pop_front();
        }
        self.items.push_back(t);
    }
}

async fn list(a: ListArgs, timeout: Duration, json: bool) -> anyhow::Result<Exit> {
    let at = locate(&a.at).await?;
    let mut rows = Newest::new(a.limit);
    let mut matched = 0u64;
    let summary = dlq::scan(&at.bootstrap, &at.dlq_topic, timeout, |d| {
        if a.class.is_none() || d.class == a.class {
            matched += 1;
            rows.push(Row::of(&d));
        }
    })
    .await?;
    let rows: Vec<Row> = rows.items.into();
    if json {
        output::json(&json!({
            "topic": summary.topic,
            "partitions": summary.partitions,
            "records": summary.records,
            "matched": matched,
            "dead_letters": rows,
        }));
        return Ok(exit::PASS);
    }
    let of_class = a
        .class
        .map(|c| format!(" of class {c}"))
        .unwrap_or_default();
    if rows.is_empty() {
        println!(
            "no dead letters{of_class} in {} at {} ({} record(s) in all)",
            at.dlq_topic, at.bootstrap, summary.records
        );
        return Ok(exit::PASS);
    }
    let mut t = output::table(&[
        "dlq",
        "class",
        "source",
        "messageId",
        "from → to",
        "dead-lettered (UTC)",
        "reason",
    ]);
    for r in &rows {
        t.add_row(r.cells(a.reason_width));
    }
    println!("{t}");
    println!(
        "{} dead letter(s){of_class} in {} at {}{}; `wiberctl dlq show <dlq>` for one whole",
        matched,
        at.dlq_topic,
        at.bootstrap,
        if (rows.len() as u64) < matched {
            format!(" (the newest {} shown: --limit)", rows.len())
        } else {
            String::new()
        }
    );
    Ok(exit::PASS)
}

/// Bytes as text when they are UTF-8, else lossily (and said so).
fn text(b: &[u8]) -> (String, bool) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), true),
        Err(_) => (String::from_utf8_lossy(b).into_owned(), false),
    }
}

/// Everything `show` prints of a dead letter, for `--json`.
fn show_json(d: &DeadLetter) -> serde_json::Value {
    let mut v = serde_json::to_value(Row::of(d)).unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = d
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_deref()
                    .map_or(serde_json::Value::Null, |b| text(b).0.into()),
            )
        })
        .collect();
    let extra = json!({
        "key": d.key.as_deref().map(|k| text(k).0),
        "headers": headers,
        "payload": d.payload.as_deref().map(|p| text(p).0),
        "payload_utf8": d.payload.as_deref().map(|p| text(p).1),
        "message": d.message.as_ref().ok(),
        "decode_error": d.message.as_ref().err(),
    });
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

async fn show(a: ShowArgs, timeout: Duration, json: bool) -> anyhow::Result<Exit> {
    let at = locate(&a.at).await?;
    let Some(d) = dlq::read_at(&at.bootstrap, &at.dlq_topic, a.pos, timeout).await? else {
        eprintln!(
            "dlq: {} holds no record at {} (deleted by retention, or never there: `wiberctl dlq list`)",
            at.dlq_topic, a.pos
        );
        return Ok(exit::FAIL);
    };
    if json {
        output::json(&show_json(&d));
        return Ok(exit::PASS);
    }
    let r = Row::of(&d);
    let or = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!("dead letter {} of {}", r.dlq, at.dlq_topic);
    println!(
        "  class:          {}",
        r.class
            .map_or("? (no known class header)".into(), |c| c.to_string())
    );
    println!("  reason:         {}", or(r.reason.clone()));
    println!(
        "  source:         {}",
        match &r.source_topic {
            Some(t) => format!("{t} {}", r.source),
            None => r.source.clone(),
        }
    );
    println!("  dead-lettered:  {}", or(r.dead_lettered_at.clone()));
    if let Some(from) = &r.replayed_from {
        println!("  replayed from:  {from}");
    }
    println!("  messageId:      {}", or(r.message_id.clone()));
    println!(
        "  key:            {}",
        or(d.key.as_deref().map(|k| format!("{:?}", text(k).0)))
    );
    println!("  headers:");
    for (k, v) in &d.headers {
        println!(
            "    {k}: {}",
            v.as_deref().map_or("(null)".into(), |b| text(b).0)
        );
    }
    match (&d.message, d.payload.as_deref()) {
        (Ok(m), _) => println!(
            "  payload (a wiber message):\n{}",
            serde_json::to_string_pretty(m).unwrap_or_default()
        ),
        (Err(e), Some(p)) => {
            let (s, utf8) = text(p);
            println!(
                "  payload ({} bytes{}; {e}):\n{s}",
                p.len(),
                if utf8 {
                    ""
                } else {
                    ", not UTF-8, shown lossily"
                }
            );
        }
        (Err(_), None) => println!("  payload:        (none)"),
    }
    Ok(exit::PASS)
}

/// Which dead letters a replay takes: named offsets (of `class` too, when given), every
/// one of `class`, or all.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selection {
    pos: BTreeSet<DlqPos>,
    all: bool,
    class: Option<Class>,
}

impl Selection {
    fn takes(&self, d: &DeadLetter) -> bool {
        let named = self.all || self.pos.is_empty() || self.pos.contains(&d.pos);
        named && self.class.is_none_or(|c| d.class == Some(c))
    }
}

#[derive(Debug, Serialize)]
struct Replayed {
    dlq: String,
    message_id: Option<String>,
    class: Option<Class>,
    delivered: Option<Delivered>,
}

async fn replay(a: ReplayArgs, timeout: Duration, json: bool) -> anyhow::Result<Exit> {
    let at = locate(&a.at).await?;
    let to_topic = a.to_topic.clone().unwrap_or_else(|| at.topic.clone());
    let sel = Selection {
        pos: a.pos.iter().copied().collect(),
        all: a.all,
        class: a.class,
    };
    // The records are held until replayed: a dead-letter topic is small (each record is
    // a message the consumers could not store), and a replay names what it takes.
    let mut chosen: Vec<DeadLetter> = Vec::new();
    dlq::scan(&at.bootstrap, &at.dlq_topic, timeout, |d| {
        if sel.takes(&d) {
            chosen.push(d);
        }
    })
    .await?;
    let found: BTreeSet<DlqPos> = chosen.iter().map(|d| d.pos).collect();
    let missing: Vec<String> = sel
        .pos
        .iter()
        .filter(|p| !found.contains(p))
        .map(|p| p.to_string())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "dlq: {} holds no record{} at {}: nothing replayed (`wiberctl dlq list`)",
            at.dlq_topic,
            sel.class
                .map(|c| format!(" of class {c}"))
                .unwrap_or_default(),
            missing.join(", ")
        );
        return Ok(exit::FAIL);
    }
    if chosen.is_empty() {
        eprintln!(
            "dlq: nothing to replay: {} holds no dead letter{}",
            at.dlq_topic,
            sel.class
                .map(|c| format!(" of class {c}"))
                .unwrap_or_default()
        );
        return Ok(exit::FAIL);
    }
    let producer = (!a.dry_run)
        .then(|| RawProducer::new(&at.bootstrap))
        .transpose()?;
    let mut done = Vec::new();
    for d in &chosen {
        let delivered = match &producer {
            Some(p) => match dlq::replay(p, d, &to_topic).await {
                Ok(x) => Some(x),
                Err(e) => {
                    if !done.is_empty() && !json {
                        eprintln!("dlq: replayed before the failure: {}", done_list(&done));
                    }
                    return Err(e.context(format!(
                        "{} of {} replayed before this one",
                        done.len(),
                        chosen.len()
                    )));
                }
            },
            None => None,
        };
        let r = Replayed {
            dlq: d.pos.to_string(),
            message_id: d.message_id.clone(),
            class: d.class,
            delivered,
        };
        if !json {
            println!("{}", replay_line(&r, &to_topic, d));
        }
        done.push(r);
    }
    if json {
        output::json(&json!({
            "to_topic": to_topic,
            "dry_run": a.dry_run,
            "replayed": done,
        }));
    }
    Ok(exit::PASS)
}

fn done_list(done: &[Replayed]) -> String {
    done.iter()
        .map(|r| r.dlq.clone())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `replayed dlq 3 (messageId m-1, refused) → wiber.messages p3@1200`, or what a dry run
/// would do.
fn replay_line(r: &Replayed, to_topic: &str, d: &DeadLetter) -> String {
    let what = format!(
        "dlq {} (messageId {}, {})",
        r.dlq,
        r.message_id.as_deref().unwrap_or("-"),
        r.class.map_or("unclassified", Class::name)
    );
    let warn = if d.class == Some(Class::Conflict) {
        "; a conflict: dead-lettered again unless the message stored under its id was removed"
    } else {
        ""
    };
    match &r.delivered {
        Some(to) => format!("replayed {what} → {to}{warn}"),
        None => format!("would replay {what} → {to_topic}{warn}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::dlq::decode;
    use crate::kafka::dlq::tests::{message, record};

    fn dead(offset: i64, class: &str) -> DeadLetter {
        let m = message(&format!("m-{offset}"));
        decode(record(offset, class, &serde_json::to_vec(&m).unwrap()))
    }

    fn at(bootstrap: Option<&str>, topic: Option<&str>, dlq: Option<&str>) -> Where {
        Where {
            bootstrap: bootstrap.map(str::to_string),
            topic: topic.map(str::to_string),
            dlq_topic: dlq.map(str::to_string),
            stack: StackArgs {
                project: "wiber".into(),
                runtime: None,
            },
        }
    }

    #[test]
    fn flags_win_then_the_stack_then_the_defaults() {
        let stack = Some((Some("127.0.0.1:19094".to_string()), "t1".to_string()));
        let r = resolve(&at(None, None, None), stack.clone());
        assert_eq!(
            (r.bootstrap.as_str(), r.topic.as_str(), r.dlq_topic.as_str()),
            ("127.0.0.1:19094", "t1", "t1.dlq")
        );
        let r = resolve(&at(Some("k:1"), Some("t2"), Some("dead")), stack);
        assert_eq!(
            (r.bootstrap.as_str(), r.topic.as_str(), r.dlq_topic.as_str()),
            ("k:1", "t2", "dead")
        );
        let r = resolve(&at(None, None, None), None);
        assert_eq!(r.bootstrap, DEFAULT_KAFKA);
        assert_eq!(r.dlq_topic, "wiber.messages.dlq");
    }

    #[test]
    fn a_row_says_what_where_and_why_in_one_line() {
        let r = Row::of(&dead(4, "refused"));
        let cells = r.cells(20);
        assert_eq!(cells[0], "4");
        assert_eq!(cells[1], "refused");
        assert_eq!(cells[2], "3@1042");
        assert_eq!(cells[3], "m-4");
        assert_eq!(cells[4], "alice → bob");
        assert_eq!(cells[5], "2023-11-14 22:13:21.000");
        assert_eq!(cells[6].chars().count(), 20, "{}", cells[6]);
        assert!(cells[6].ends_with('…'));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["class"], "refused");
        assert_eq!(v["source_offset"], 1042);
        assert_eq!(
            (v["dlq_partition"].clone(), v["dlq_offset"].clone()),
            (0.into(), 4.into())
        );
        assert!(v.get("source").is_none(), "the text column only");
        assert_eq!(cut("a\nb", 10), "a b");
    }

    #[test]
    fn show_json_holds_the_payload_and_headers() {
        let v = show_json(&dead(4, "refused"));
        assert_eq!(v["dlq"], "4");
        assert_eq!(v["message"]["messageId"], "m-4");
        assert_eq!(v["message"]["content"], "a\u{0}b");
        assert_eq!(v["headers"]["wiber-dlq-class"], "refused");
        assert_eq!(v["key"], "alice\u{1f}bob");
        assert!(v["decode_error"].is_null());
        assert!(v["payload"]
            .as_str()
            .unwrap()
            .contains("\"messageId\":\"m-4\""));
    }

    #[test]
    fn a_selection_takes_what_it_names() {
        let (r, c) = (dead(1, "refused"), dead(2, "conflict"));
        let sel = |pos: &[i64], all, class| Selection {
            pos: pos
                .iter()
                .map(|&o| DlqPos {
                    partition: 0,
                    offset: o,
                })
                .collect(),
            all,
            class,
        };
        assert!(sel(&[1], false, None).takes(&r));
        assert!(!sel(&[1], false, None).takes(&c));
        assert!(sel(&[], true, None).takes(&c));
        assert!(sel(&[], false, Some(Class::Conflict)).takes(&c));
        assert!(!sel(&[], false, Some(Class::Conflict)).takes(&r));
        assert!(
            !sel(&[1], false, Some(Class::Conflict)).takes(&r),
            "both must hold"
        );
    }

    #[test]
    fn the_newest_are_kept() {
        let mut n = Newest::new(2);
        for i in 0..5 {
            n.push(i);
        }
        assert_eq!(Vec::from(n.items), [3, 4]);
        let mut none = Newest::new(0);
        none.push(1);
        assert!(none.items.is_empty());
    }

    #[test]
    fn a_replay_says_where_it_went() {
        let d = dead(3, "refused");
        let mut r = Replayed {
            dlq: "3".into(),
            message_id: Some("m-3".into()),
            class: Some(Class::Refused),
            delivered: None,
        };
        assert_eq!(
            replay_line(&r, "wiber.messages", &d),
            "would replay dlq 3 (messageId m-3, refused) → wiber.messages"
        );
        r.delivered = Some(Delivered {
            topic: "wiber.messages".into(),
            partition: 3,
            offset: 1200,
        });
        assert_eq!(
            replay_line(&r, "wiber.messages", &d),
            "replayed dlq 3 (messageId m-3, refused) → wiber.messages p3@1200"
        );
        assert!(replay_line(&r, "t", &dead(5, "conflict")).contains("dead-lettered again"));
    }
}
