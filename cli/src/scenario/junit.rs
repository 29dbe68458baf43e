//! JUnit XML for CI systems: one `<testsuite>` per scenario, one `<testcase>` per
//! threshold, plus one for the delivery invariants and one for the run itself (so a run
//! that could not be done shows as an error, not as zero tests).

use std::fmt::Write as _;

/// One test case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub status: CaseStatus,
    /// Failure / error / skip message.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseStatus {
    Pass,
    Fail,
    Error,
    Skipped,
}

/// One scenario's cases.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    pub name: String,
    pub file: String,
    pub seconds: f64,
    pub cases: Vec<Case>,
}

/// Renders the suites as a `<testsuites>` document.
pub fn render(suites: &[Suite]) -> String {
    let count = |s: &Suite, st: CaseStatus| s.cases.iter().filter(|c| c.status == st).count();
    let total = |st: CaseStatus| suites.iter().map(|s| count(s, st)).sum::<usize>();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"wiber scenarios\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        suites.iter().map(|s| s.cases.len()).sum::<usize>(),
        total(CaseStatus::Fail),
        total(CaseStatus::Error),
        total(CaseStatus::Skipped),
        suites.iter().map(|s| s.seconds).sum::<f64>()
    );
    for s in suites {
        let _ = writeln!(
            out,
            "  <testsuite name=\"scenario {}\" file=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            esc(&s.name),
            esc(&s.file),
            s.cases.len(),
            count(s, CaseStatus::Fail),
            count(s, CaseStatus::Error),
            count(s, CaseStatus::Skipped),
            s.seconds
        );
        for c in &s.cases {
            let head = format!(
                "    <testcase classname=\"scenario.{}\" name=\"{}\"",
                esc(&s.name),
                esc(&c.name)
            );
            let m = esc(&c.message);
            match c.status {
                CaseStatus::Pass => {
                    let _ = writeln!(out, "{head}/>");
                }
                CaseStatus::Fail => {
                    let _ = writeln!(
                        out,
                        "{head}>\n      <failure message=\"{m}\">{m}</failure>\n    </testcase>"
                    );
                }
                CaseStatus::Error => {
                    let _ = writeln!(
                        out,
                        "{head}>\n      <error message=\"{m}\">{m}</error>\n    </testcase>"
                    );
                }
                CaseStatus::Skipped => {
                    let _ = writeln!(
                        out,
                        "{head}>\n      <skipped message=\"{m}\"/>\n    </testcase>"
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// XML-escapes text for attributes and content; control characters other than tab
/// and newline are not allowed in XML 1.0 and are dropped.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\t' => o.push('\t'),
            c if c.is_control() => {}
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_escapes() {
        let s = Suite {
            name: "kill-api".into(),
            file: "scenarios/kill-api.toml".into(),
            seconds: 12.5,
            cases: vec![
                Case {
                    name: "lost == 0".into(),
                    status: CaseStatus::Pass,
                    message: String::new(),
                },
                Case {
                    name: "ack.p99 < 200ms".into(),
                    status: CaseStatus::Fail,
                    message: "ack.p99 = 250 does not satisfy < 200".into(),
                },
                Case {
                    name: "ack.p99 < 1.2 * baseline".into(),
                    status: CaseStatus::Skipped,
                    message: "no baseline".into(),
                },
            ],
        };
        let x = render(&[s]);
        assert!(
            x.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""),
            "{x}"
        );
        assert!(x.contains("name=\"ack.p99 &lt; 200ms\""), "{x}");
        assert!(
            x.contains("<failure message=\"ack.p99 = 250 does not satisfy &lt; 200\">"),
            "{x}"
        );
        assert!(x.contains("<skipped message=\"no baseline\"/>"), "{x}");
        assert_eq!(x.matches("<testcase").count(), 3);
    }
}
