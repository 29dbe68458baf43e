//! `wiber-server` built with the test-only `seeded-bugs` feature (`WIBER_SEEDED_BUG`):
//! the kill matrix's server. A binary of its own (`required-features`), so neither
//! `cargo build --workspace` nor a release build contains it, and building it never
//! replaces `target/*/wiber-server`.

fn main() -> std::process::ExitCode {
    wiber_server::cli::main()
}
