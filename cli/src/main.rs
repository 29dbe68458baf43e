//! `wiberctl`: thin entry point; everything lives in the library.

fn main() -> std::process::ExitCode {
    wiberctl::app::main()
}
