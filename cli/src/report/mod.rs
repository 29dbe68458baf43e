//! Report writers: `report.json` (schema `wiber.report.v1`, checked in at
//! `cli/schema/report.v1.schema.json`), `report.md` and a self-contained `report.html`
//! (inline SVG, no scripts, nothing fetched from the network). All three render the same
//! [`Report`], so `verify` can add its verdict and re-render them.

pub mod html;
pub mod markdown;

use std::path::Path;

use anyhow::Context;
use wiber_model::report::Report;

/// Writes `report.json`, `report.md` and `report.html` into `dir`.
pub fn write_all(dir: &Path, report: &Report) -> anyhow::Result<()> {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write(
        "report.json",
        serde_json::to_string_pretty(report).expect("reports serialise"),
    )?;
    write("report.md", markdown::render(report))?;
    write("report.html", html::render(report))
}

/// `12.3` for a rate, `-` when absent.
pub(crate) fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

/// A count with its share, `12 (40.0%)`; just the count when there is no share.
pub fn with_share(n: u64, share: Option<f64>) -> String {
    match share {
        Some(f) => format!("{n} ({:.1}%)", 100.0 * f),
        None => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_with_their_share() {
        assert_eq!(super::with_share(3, Some(0.375)), "3 (37.5%)");
        assert_eq!(super::with_share(0, None), "0");
    }
}
