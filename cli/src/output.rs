//! Rendering for people (comfy-table) and for scripts (`--json`), kept apart from the
//! commands so every command prints the same way.

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;
use wiber_model::Message;

/// Prints `value` as pretty JSON on stdout. A reader that went away (`| head`) is not an
/// error of ours: the rest is dropped instead of panicking on the closed pipe.
pub fn json<T: Serialize>(value: &T) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value).expect("output types serialise");
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// A table with the house style.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    t
}

/// Messages as a table, in the order given.
pub fn messages(msgs: &[Message]) -> Table {
    let mut t = table(&["time (UTC)", "from", "to", "content", "messageId"]);
    for m in msgs {
        t.add_row(vec![
            m.created_at
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_string(),
            m.from_user.clone(),
            m.to_user.clone(),
            m.content.clone(),
            m.message_id.clone(),
        ]);
    }
    t
}
