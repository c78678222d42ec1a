//! The real `vaultctl`, built inside this package for the CLI tests.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    vault_client::cli::main()
}
