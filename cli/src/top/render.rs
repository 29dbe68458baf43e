//! Draws a [`Snapshot`] with ratatui: into the terminal's frame (live), or into a
//! buffer that becomes plain text (`top --once`). One drawing for both, so the text a
//! script or a doc shows is what the dashboard shows.
//!
//! Layout, top to bottom: a title line; the instances; the API's traffic beside Kafka
//! (store rate, lag and its age per partition); active faults beside the latest events;
//! the parts that could not be read, if any.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Widget};

use super::snapshot::{InstanceRow, Snapshot};
use crate::runtime::{Health, InstanceState};

/// What the title line says besides the snapshot.
#[derive(Debug, Clone)]
pub struct Header {
    pub project: String,
    /// Refresh interval, for the title.
    pub interval: std::time::Duration,
    /// Live view: mention the keys.
    pub live: bool,
}

/// Lines the API panel takes inside its border.
const API_LINES: u16 = 7;

/// Draws the dashboard into `area` of `buf`. `snap` is `None` until the first sample.
pub fn draw(area: Rect, buf: &mut Buffer, header: &Header, snap: Option<&Snapshot>) {
    let Some(s) = snap else {
        let [title, body] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
        title_line(header, None).render(title, buf);
        Paragraph::new(format!("reading stack {:?} ...", header.project)).render(body, buf);
        return;
    };
    let problems = s.problems.len() as u16;
    let [title, instances, middle, bottom, problems_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(s.instances.len() as u16 + 3),
        Constraint::Length(middle_height(s)),
        Constraint::Min(5),
        Constraint::Length(problems),
    ])
    .areas(area);
    title_line(header, Some(s)).render(title, buf);
    instances_table(s).render(instances, buf);
    let [api, kafka] =
        Layout::horizontal([Constraint::Length(46), Constraint::Min(40)]).areas(middle);
    api_panel(s).render(api, buf);
    kafka_panel(s, kafka, buf);
    let [faults, events] =
        Layout::horizontal([Constraint::Length(46), Constraint::Min(40)]).areas(bottom);
    faults_panel(s).render(faults, buf);
    events_panel(s).render(events, buf);
    if problems > 0 {
        let lines: Vec<Line> = s
            .problems
            .iter()
            .map(|p| Line::styled(format!("! {p}"), Style::new().fg(Color::Red)))
            .collect();
        Paragraph::new(lines).render(problems_area, buf);
    }
}

/// Height the whole dashboard needs to show everything (for the text rendering).
pub fn full_height(s: &Snapshot) -> u16 {
    // Faults and events: a header and their rows, at least the 5 lines `draw` gives them.
    let rows = s.faults.len().max(s.events.len()).max(1) as u16;
    let bottom = (rows + 1 + 2).max(5);
    1 + (s.instances.len() as u16 + 3) + middle_height(s) + bottom + s.problems.len() as u16
}

/// The dashboard as plain text, `width` columns wide, trailing spaces trimmed.
pub fn to_text(header: &Header, s: &Snapshot, width: u16) -> String {
    let area = Rect::new(0, 0, width, full_height(s));
    let mut buf = Buffer::empty(area);
    draw(area, &mut buf, header, Some(s));
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            if let Some(c) = buf.cell((x, y)) {
                line.push_str(c.symbol());
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn middle_height(s: &Snapshot) -> u16 {
    // Kafka panel: two summary lines, the table header, one row per partition, a line
    // per stalled partition.
    let kafka = 3 + s.kafka.partitions.len().max(1) as u16 + stalled_lines(s);
    kafka.max(API_LINES) + 2
}

fn title_line(h: &Header, s: Option<&Snapshot>) -> Line<'static> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut spans = vec![
        Span::styled("wiberctl top", bold),
        Span::raw(format!("  stack {:?}", h.project)),
    ];
    if let Some(s) = s {
        spans.push(Span::raw(format!(" ({})", s.runtime)));
        spans.push(Span::raw(format!("  {} UTC", clock(s.time_ms))));
    }
    spans.push(Span::raw(format!("  every {}", interval(h.interval))));
    if h.live {
        spans.push(Span::styled("  q quit", Style::new().fg(Color::DarkGray)));
    }
    Line::from(spans)
}

fn instances_table(s: &Snapshot) -> Table<'static> {
    let header = Row::new([
        "instance", "state", "health", "network", "restarts", "uptime", "cpu", "rss", "pid/id",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = s.instances.iter().map(instance_row);
    Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Min(8),
        ],
    )
    .header(header)
    .block(Block::bordered().title(" instances "))
}

fn instance_row(i: &InstanceRow) -> Row<'static> {
    let state_style = match i.state {
        InstanceState::Running => Style::new().fg(Color::Green),
        InstanceState::Paused | InstanceState::Restarting | InstanceState::Created => {
            Style::new().fg(Color::Yellow)
        }
        _ => Style::new().fg(Color::Red),
    };
    let health_style = match i.health {
        Health::Unhealthy => Style::new().fg(Color::Red),
        Health::Starting => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    };
    Row::new([
        Cell::from(i.instance.clone()),
        Cell::from(i.state.name()).style(state_style),
        Cell::from(i.health.name()).style(health_style),
        if i.connected {
            Cell::from("connected")
        } else {
            Cell::from("disconnected").style(Style::new().fg(Color::Red))
        },
        Cell::from(i.restarts.to_string()),
        Cell::from(i.uptime_s.map_or("-".into(), uptime)),
        Cell::from(i.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%"))),
        Cell::from(i.rss_bytes.map_or("-".into(), bytes)),
        Cell::from(i.pid_or_container.clone()),
    ])
}

fn api_panel(s: &Snapshot) -> Paragraph<'static> {
    let a = &s.api;
    let dim = Style::new().fg(Color::DarkGray);
    let err = |v: Option<f64>| {
        if v.is_some_and(|v| v > 0.0) {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        }
    };
    let line = |label: &str, value: String, style: Style, note: &str| {
        Line::from(vec![
            Span::raw(format!("{label:<9}")),
            Span::styled(format!("{value:>9}"), style),
            Span::styled(format!("  {note}"), dim),
        ])
    };
    let lines = vec![
        line(
            "req/s",
            rate(a.requests_per_s),
            Style::new(),
            "excl. /metrics, /health",
        ),
        line(
            "acked/s",
            rate(a.acked_per_s),
            Style::new(),
            "POST /messages 2xx",
        ),
        line(
            "5xx/s",
            rate(a.server_errors_per_s),
            err(a.server_errors_per_s),
            "stack failed",
        ),
        line(
            "4xx/s",
            rate(a.client_errors_per_s),
            Style::new(),
            "input refused",
        ),
        line("ack p50", millis(a.ack_p50_ms), Style::new(), "acks=all"),
        line("ack p99", millis(a.ack_p99_ms), Style::new(), ""),
        Line::styled(
            if a.scraped.is_empty() {
                "metrics: none read".to_string()
            } else {
                format!("metrics of {}", a.scraped.join(", "))
            },
            dim,
        ),
    ];
    Paragraph::new(lines).block(Block::bordered().title(" api (over the last interval) "))
}

/// Partitions whose consumer reports a stall.
fn stalled_lines(s: &Snapshot) -> u16 {
    s.kafka
        .partitions
        .iter()
        .filter(|p| p.stalled.is_some())
        .count() as u16
}

fn kafka_panel(s: &Snapshot, area: Rect, buf: &mut Buffer) {
    let k = &s.kafka;
    let block = Block::bordered().title(format!(" kafka {} → store (group {}) ", k.topic, k.group));
    let inner = block.inner(area);
    block.render(area, buf);
    let [summary, table, stalls] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(1),
        Constraint::Length(stalled_lines(s)),
    ])
    .areas(inner);
    // Under the lag it explains: which record holds the partition, and the store's error.
    let stalled: Vec<Line> = k
        .partitions
        .iter()
        .filter_map(|p| p.stalled.as_ref())
        .map(|l| Line::styled(l.clone(), Style::new().fg(Color::Red)))
        .collect();
    Paragraph::new(stalled).render(stalls, buf);
    let dim = Style::new().fg(Color::DarkGray);
    let lag_style = |lag: i64| {
        if lag > 0 {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        }
    };
    let total = k.total_lag.unwrap_or(0);
    Paragraph::new(vec![
        Line::from(vec![
            Span::raw("stored/s "),
            Span::raw(format!("{:>9}", rate(k.stored_per_s))),
            // Why this is the store's write rate and not merely consumption: the
            // consumers commit an offset only after the records below it are durably
            // written, so committed offsets per second are records stored per second.
            Span::styled("  = offsets committed/s (after the durable write)", dim),
        ]),
        Line::from(vec![
            Span::raw("total lag "),
            Span::styled(
                format!("{:>8}", k.total_lag.map_or("-".into(), |l| l.to_string())),
                lag_style(total),
            ),
            Span::raw("  oldest unstored "),
            Span::styled(
                k.oldest_unstored_ms.map_or("-".into(), age),
                age_style(k.oldest_unstored_ms),
            ),
        ]),
    ])
    .render(summary, buf);
    let header = Row::new(["partition", "committed", "end", "lag", "oldest unstored"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = k.partitions.iter().map(|p| {
        Row::new([
            Cell::from(p.partition.to_string()),
            Cell::from(p.committed.map_or("-".into(), |c| c.to_string())),
            Cell::from(p.end.to_string()),
            Cell::from(p.lag.to_string()).style(lag_style(p.lag)),
            Cell::from(p.oldest_unstored_ms.map_or("-".into(), age))
                .style(age_style(p.oldest_unstored_ms)),
        ])
    });
    Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Min(10),
        ],
    )
    .header(header)
    .render(table, buf);
}

fn faults_panel(s: &Snapshot) -> Table<'static> {
    let rows: Vec<Row> = if s.faults.is_empty() {
        vec![Row::new(["none"]).style(Style::new().fg(Color::DarkGray))]
    } else {
        s.faults
            .iter()
            .map(|f| {
                Row::new([
                    Cell::from(f.target.clone()),
                    Cell::from(f.action.clone()).style(Style::new().fg(Color::Yellow)),
                    Cell::from(match f.left_ms {
                        Some(ms) => format!("{} left", age(ms)),
                        None => "until undone".into(),
                    }),
                ])
            })
            .collect()
    };
    Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(15),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["target", "fault", "undo"]).style(Style::new().add_modifier(Modifier::BOLD)))
    .block(Block::bordered().title(" active faults "))
}

fn events_panel(s: &Snapshot) -> Table<'static> {
    // Newest first: the bottom of a long log is what just happened.
    let rows: Vec<Row> = s
        .events
        .iter()
        .rev()
        .map(|e| {
            let ok = e.result == "ok";
            Row::new([
                Cell::from(clock(e.time_ms)),
                Cell::from(e.action.clone()),
                Cell::from(e.target.clone()),
                Cell::from(e.result.clone()).style(if ok {
                    Style::new()
                } else {
                    Style::new().fg(Color::Red)
                }),
            ])
        })
        .collect();
    let title = format!(" latest events ({}) ", s.events_file.display());
    Table::new(
        rows,
        [
            Constraint::Length(9),
            Constraint::Length(20),
            Constraint::Length(14),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(["time", "action", "target", "result"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(title))
}

fn age_style(ms: Option<i64>) -> Style {
    match ms {
        Some(ms) if ms >= 5_000 => Style::new().fg(Color::Red),
        Some(ms) if ms >= 1_000 => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    }
}

/// `HH:MM:SS` (UTC) of a time in ms since the epoch.
fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The refresh interval as it would be typed: `1s`, `500ms`, `1.5s`.
fn interval(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        0..=999 => format!("{ms}ms"),
        _ => format!("{}s", d.as_secs_f64()),
    }
}

/// A rate with one decimal; `-` when unknown (first sample).
pub fn rate(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// A latency in ms: `0.84 ms`, `12.3 ms`, `1.25 s`.
pub fn millis(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(ms) if ms < 1.0 => format!("{ms:.2} ms"),
        Some(ms) if ms < 1000.0 => format!("{ms:.1} ms"),
        Some(ms) => format!("{:.2} s", ms / 1000.0),
    }
}

/// A wait: `850 ms`, `12.3 s`, `2m 05s`, `1h 02m`.
pub fn age(ms: i64) -> String {
    match ms {
        ..=999 => format!("{} ms", ms.max(0)),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// Bytes in binary units: `512 B`, `45.2 MiB`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn uptime(s: i64) -> String {
    match s {
        ..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::super::faults::ActiveFault;
    use super::super::snapshot::{ApiStats, KafkaStats, PartitionRow, SCHEMA};
    use super::*;
    use crate::events::Event;
    use crate::runtime::{Action, RuntimeKind, Service};
    use std::time::Duration;

    fn snapshot() -> Snapshot {
        let inst = |name: &str, service, state| InstanceRow {
            instance: name.into(),
            service,
            state,
            health: Health::None,
            connected: true,
            restarts: 0,
            uptime_s: Some(75),
            pid_or_container: "4242".into(),
            cpu_percent: Some(12.34),
            rss_bytes: Some(45 * 1024 * 1024),
        };
        Snapshot {
            schema: SCHEMA,
            project: "demo".into(),
            runtime: RuntimeKind::Local,
            time_ms: 1_700_000_000_000,
            time: String::new(),
            interval_s: Some(1.0),
            instances: vec![
                inst("api#1", Service::Api, InstanceState::Running),
                inst("consumer#1", Service::Consumer, InstanceState::Paused),
                inst("kafka#1", Service::Kafka, InstanceState::Running),
                inst("mongo#1", Service::Mongo, InstanceState::Running),
            ],
            api: ApiStats {
                scraped: vec!["api#1".into()],
                requests_per_s: Some(199.5),
                acked_per_s: Some(199.0),
                client_errors_per_s: Some(0.0),
                server_errors_per_s: Some(0.5),
                ack_p50_ms: Some(4.12),
                ack_p99_ms: Some(1250.0),
            },
            kafka: KafkaStats {
                topic: "wiber.messages".into(),
                group: "wiber-consumers".into(),
                partitions: vec![
                    PartitionRow {
                        partition: 0,
                        committed: Some(10),
                        end: 10,
                        lag: 0,
                        oldest_unstored_ms: None,
                        stalled: None,
                    },
                    PartitionRow {
                        partition: 1,
                        committed: Some(3),
                        end: 60,
                        lag: 57,
                        oldest_unstored_ms: Some(12_300),
                        stalled: None,
                    },
                ],
                total_lag: Some(57),
                oldest_unstored_ms: Some(12_300),
                stored_per_s: Some(0.0),
            },
            faults: vec![ActiveFault {
                target: "consumer#1".into(),
                action: "pause".into(),
                kind: Action::Pause,
                since_ms: 1_699_999_990_000,
                undo_at_ms: Some(1_700_000_020_000),
                left_ms: Some(20_000),
            }],
            events: vec![Event {
                time_ms: 1_699_999_990_000,
                time: String::new(),
                action: "pause".into(),
                target: "consumer#1".into(),
                container: "4242".into(),
                result: "ok".into(),
                undo_at_ms: Some(1_700_000_020_000),
                project: None,
                detail: None,
            }],
            events_file: "reports/events.jsonl".into(),
            problems: vec!["kafka: broker down".into()],
        }
    }

    fn header() -> Header {
        Header {
            project: "demo".into(),
            interval: Duration::from_secs(1),
            live: false,
        }
    }

    /// The token after `label` on the first line holding it.
    fn value_after(text: &str, label: &str) -> String {
        let line = text.lines().find(|l| l.contains(label)).unwrap();
        let rest = &line[line.find(label).unwrap() + label.len()..];
        rest.split_whitespace().next().unwrap().to_string()
    }

    #[test]
    fn the_text_rendering_shows_every_part() {
        let text = to_text(&header(), &snapshot(), 140);
        for want in [
            "stack \"demo\" (local)",
            "api#1",
            "consumer#1",
            "kafka#1",
            "mongo#1",
            "paused",
            "12.3%",
            "45.0 MiB",
            "1m 15s",
            "4.1 ms",
            "1.25 s",
            "= offsets committed/s (after the durable write)",
            "12.3 s",
            "20.0 s left",
            "reports/events.jsonl",
            "! kafka: broker down",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert_eq!(value_after(&text, "req/s"), "199.5");
        assert_eq!(value_after(&text, "5xx/s"), "0.5");
        assert_eq!(value_after(&text, "total lag"), "57");
        assert_eq!(value_after(&text, "stored/s"), "0.0");
        assert!(!text.contains("q quit"), "no keys off a terminal");
        assert_eq!(text.lines().count() as u16, full_height(&snapshot()));
    }

    /// A stalled partition's line shows under the lag, and the height makes room for it.
    #[test]
    fn a_stalled_partition_is_shown_under_the_lag() {
        let mut s = snapshot();
        let plain = to_text(&header(), &s, 140);
        assert!(!plain.contains("stalled"), "{plain}");
        s.kafka.partitions[1].stalled =
            Some("stalled p1@3 for 2m (7 attempts, consumer#1): refused".into());
        let text = to_text(&header(), &s, 140);
        assert!(
            text.contains("stalled p1@3 for 2m (7 attempts, consumer#1): refused"),
            "{text}"
        );
        assert_eq!(text.lines().count() as u16, full_height(&s));
        // Below the table: the partitions' rows are all there.
        let table_end = text.find("12.3 s").unwrap();
        assert!(text.find("stalled p1").unwrap() > table_end, "{text}");
        // Room is made for every stalled line, beyond what the API panel's height gives.
        let mut many = snapshot();
        for p in 2..8 {
            let mut row = many.kafka.partitions[1].clone();
            row.partition = p;
            many.kafka.partitions.push(row);
        }
        let unstalled = full_height(&many);
        for row in &mut many.kafka.partitions {
            row.stalled = Some(format!("stalled p{}@3 for 2m: refused", row.partition));
        }
        assert_eq!(full_height(&many), unstalled + 8);
        let text = to_text(&header(), &many, 140);
        for p in 0..8 {
            assert!(text.contains(&format!("stalled p{p}@3")), "{p}: {text}");
        }
    }

    #[test]
    fn a_first_sample_shows_unknown_rates() {
        let mut s = snapshot();
        s.interval_s = None;
        s.api = ApiStats::default();
        s.kafka.stored_per_s = None;
        let text = to_text(&header(), &s, 140);
        assert_eq!(value_after(&text, "req/s"), "-");
        assert_eq!(value_after(&text, "stored/s"), "-");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(rate(Some(12.345)), "12.3");
        assert_eq!(rate(None), "-");
        assert_eq!(millis(Some(0.84)), "0.84 ms");
        assert_eq!(millis(Some(12.34)), "12.3 ms");
        assert_eq!(millis(Some(1250.0)), "1.25 s");
        assert_eq!(age(850), "850 ms");
        assert_eq!(age(12_345), "12.3 s");
        assert_eq!(age(125_000), "2m 05s");
        assert_eq!(age(3_720_000), "1h 02m");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(45 * 1024 * 1024 + 200 * 1024), "45.2 MiB");
        assert_eq!(uptime(75), "1m 15s");
        assert_eq!(interval(Duration::from_secs(1)), "1s");
        assert_eq!(interval(Duration::from_millis(500)), "500ms");
        assert_eq!(interval(Duration::from_millis(1500)), "1.5s");
    }
}
