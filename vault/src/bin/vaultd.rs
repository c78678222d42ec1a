//! `vaultd`: the vault daemon. Everything is in [`vault::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    vault::cli::main()
}
