//! `vaultd`: the vault daemon. Everything is in [`vault::cli`].
#![forbid(unsafe_code)]

/// The global allocator (feature `mimalloc`, on by default): sled allocates
/// on every read and write, and glibc's malloc was a tenth of vaultd's CPU
/// time under load (see `docs/performance.md`). Set by the binary, never by
/// the library, so that a program embedding the vault keeps its own.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vault::cli::main()
}
