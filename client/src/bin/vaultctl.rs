//! `vaultctl`: the vault's command-line client. Everything is in [`vault_client::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    vault_client::cli::main()
}
