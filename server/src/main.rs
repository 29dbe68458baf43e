//! `wiber-server api` and `wiber-server consumer`: a thin entry point; the command line
//! is in the library ([`wiber_server::cli`]) and the logic behind it too, so tests drive
//! it in-process.

fn main() -> std::process::ExitCode {
    wiber_server::cli::main()
}
