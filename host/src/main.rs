//! The `runner` binary: everything happens in the library's `cli` module.

fn main() -> std::process::ExitCode {
    runner::cli::main()
}
