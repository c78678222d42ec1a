//! The real `vaultd`, built inside this package so that the end-to-end tests
//! can start it (cargo builds a package's binaries before its tests).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    vault::cli::main()
}
