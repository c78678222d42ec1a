//! `vaultctl`: the vault's command-line client, built on the
//! `vault_client` library. A table for people, `--json` for scripts; a
//! failed call prints the gRPC code and message (and each field violation)
//! and exits 1; a wrong command line or local input exits 2.
//!
//! Modules:
//!
//! - [`commands`]: one module per command group (token, card, subject,
//!   lifecycle, keys, system, principal, policy, audit), each with its
//!   subcommands and its `run`;
//! - [`bench`]: `vaultctl bench`, the load generator;
//! - [`connect`]: the connection the global options describe;
//! - [`input`]: values from standard input, FIELD=VALUE pairs, lifetimes;
//! - [`output`]: tables, progress bars, error reports.
//!
//! With the `offline-policy` feature (off by default), `policy check` and
//! `policy explain --dir` link the vault's policy layer; without it, they
//! say so and exit 2.

#![forbid(unsafe_code)]

mod bench;
mod commands;
mod connect;
mod input;
mod output;

use clap::{Parser, Subcommand};
use commands::{audit, card, keys, lifecycle, policy, principal, subject, system, token};
use std::process::ExitCode;
use vault_client::ClientError;

/// Command-line client of the vault.
#[derive(Debug, Parser)]
#[command(name = "vaultctl", version, about = "Talk to a vault over gRPC")]
pub struct Cli {
    /// The vault's address: HOST:PORT (TLS when --ca-cert is given,
    /// plaintext otherwise), https://HOST:PORT, or http://HOST:PORT
    /// (plaintext; refused with any TLS option).
    #[arg(
        long,
        global = true,
        env = "VAULTCTL_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub addr: String,
    /// Bearer token issued by the vault (`vaultctl principal create`).
    #[arg(long, global = true, env = "VAULTCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) of the vault's TLS certificate: turns TLS on.
    #[arg(long, global = true, env = "VAULTCTL_CACERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Client certificate (PEM), for mTLS.
    #[arg(long, global = true, env = "VAULTCTL_CLIENT_CERT")]
    pub client_cert: Option<std::path::PathBuf>,
    /// Client certificate key (PEM), for mTLS.
    #[arg(long, global = true, env = "VAULTCTL_CLIENT_KEY")]
    pub client_key: Option<std::path::PathBuf>,
    /// Name to check the vault's certificate against (default: the address's host).
    #[arg(long, global = true, env = "VAULTCTL_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// A vaultctl command.
#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Token(token::TokenCommand),
    /// Grant or withdraw purposes a subject consented to.
    Consent(subject::ConsentArgs),
    /// Tokenize and reveal payment cards.
    #[command(subcommand)]
    Card(card::CardCommand),
    /// A subject's rights (privacy officer): erase, restrict, legal hold.
    #[command(subcommand)]
    Subject(subject::SubjectCommand),
    /// Retention: what is due, and the sweeper (privacy officer, operators).
    #[command(subcommand)]
    Lifecycle(lifecycle::LifecycleCommand),
    /// Key custody: KEK rotation (operators).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    #[command(flatten)]
    Custody(system::CustodyCommand),
    /// Manage bearer tokens (operators).
    #[command(subcommand)]
    Principal(principal::PrincipalCommand),
    /// Check, explain and reload access policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Query and verify the audit trail (auditors).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    #[command(flatten)]
    Info(system::InfoCommand),
    /// Measure throughput and latency of a running vault.
    Bench(bench::BenchArgs),
}

/// Why a vaultctl command failed.
#[derive(Debug)]
pub enum Failure {
    /// The vault (or the connection) refused the call.
    Call(ClientError),
    /// The command line or local input is wrong.
    Usage(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self::Call(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self::Usage(e.to_string())
    }
}

/// Every environment variable vaultctl's command line reads (all
/// `VAULTCTL_*`), from the clap definitions themselves.
fn own_variables(cmd: &clap::Command, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        if let Some(name) = a.get_env().and_then(|e| e.to_str()) {
            out.push(name.to_owned());
        }
    }
    for sub in cmd.get_subcommands() {
        own_variables(sub, out);
    }
}

fn stale_variables(env: impl Fn(&str) -> bool) -> Vec<String> {
    let mut names = Vec::new();
    own_variables(&<Cli as clap::CommandFactory>::command(), &mut names);
    names.sort();
    names.dedup();
    names
        .iter()
        .filter_map(|n| n.strip_prefix("VAULTCTL_"))
        .filter(|n| env(&format!("VAULT_{n}")) && !env(&format!("VAULTCTL_{n}")))
        .map(|n| format!("VAULT_{n} (now VAULTCTL_{n})"))
        .collect()
}

fn main() -> ExitCode {
    let stale = stale_variables(|name| std::env::var_os(name).is_some());
    if !stale.is_empty() {
        eprintln!(
            "error: vaultctl's variables are now named VAULTCTL_*; rename {} (or unset the old ones)",
            stale.join(", ")
        );
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Call(e)) => {
            output::report(&e);
            ExitCode::FAILURE
        }
        Err(Failure::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
    }
}

/// Runs the commands that need no vault; `None` if `command` needs one.
fn run_offline(
    command: &Command,
    json: bool,
    out: &mut impl std::io::Write,
) -> Option<Result<(), Failure>> {
    match command {
        Command::Subject(c) => subject::run_offline(c, json, out),
        Command::Audit(c) => audit::run_offline(c, json, out),
        Command::Policy(c) => policy::run_offline(c, json, out),
        _ => None,
    }
}

/// Runs one parsed command: offline if it needs no vault, else against the
/// vault the global options name.
async fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.json;
    let mut out = std::io::stdout().lock();
    if let Some(r) = run_offline(&cli.command, json, &mut out) {
        return r;
    }
    let target = connect::target(&cli)?;
    if let Command::Bench(args) = cli.command {
        return bench::run(&target, args, json, &mut out).await;
    }
    let vault = &mut target.connect().await?;
    let out = &mut out;
    match cli.command {
        Command::Token(c) => token::run(c, vault, json, out).await,
        Command::Consent(c) => subject::consent(c, vault, json, out).await,
        Command::Card(c) => card::run(c, vault, json, out).await,
        Command::Subject(c) => subject::run(c, vault, json, out).await,
        Command::Lifecycle(c) => lifecycle::run(c, vault, json, out).await,
        Command::Keys(c) => keys::run(c, vault, json, out).await,
        Command::Custody(c) => system::run_custody(c, vault, json, out).await,
        Command::Principal(c) => principal::run(c, vault, json, out).await,
        Command::Policy(c) => policy::run(c, vault, json, out).await,
        Command::Audit(c) => audit::run(c, vault, json, out).await,
        Command::Info(c) => system::run_info(c, vault, json, out).await,
        // Ran above, with its own connections.
        Command::Bench(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_variable_without_its_new_name_is_named() {
        let set = |names: &'static [&'static str]| move |n: &str| names.contains(&n);
        assert!(stale_variables(set(&[])).is_empty());
        assert!(stale_variables(set(&["VAULTCTL_ADDR", "VAULT_ADDR"])).is_empty());
        assert_eq!(
            stale_variables(set(&["VAULT_ADDR", "VAULT_CACERT", "VAULTCTL_TOKEN"])),
            [
                "VAULT_ADDR (now VAULTCTL_ADDR)",
                "VAULT_CACERT (now VAULTCTL_CACERT)"
            ]
        );
        // Every variable vaultctl ever read under its old name is covered,
        // the bench's erase token (a subcommand's) too.
        let old = [
            "ADDR",
            "TOKEN",
            "CACERT",
            "CLIENT_CERT",
            "CLIENT_KEY",
            "TLS_DOMAIN",
            "ERASE_TOKEN",
        ];
        let all = stale_variables(|n| n.starts_with("VAULT_"));
        for n in old {
            assert!(
                all.contains(&format!("VAULT_{n} (now VAULTCTL_{n})")),
                "{n}: {all:?}"
            );
        }
    }
}
