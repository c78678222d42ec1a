//! The `vaultctl` command line: tokenize, detokenize, lookup, update, status,
//! bench. A table for people, `--json` for scripts; a failed call prints the
//! gRPC code and message (and each field violation) and exits non-zero.

use crate::{ClientError, VaultClient};
use clap::{Parser, Subcommand};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use zeroize::Zeroizing;

/// Command-line client of the vault.
#[derive(Debug, Parser)]
#[command(name = "vaultctl", version, about = "Talk to a vault over gRPC")]
pub struct Cli {
    /// The vault's address.
    #[arg(
        long,
        global = true,
        env = "VAULT_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// A vaultctl command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store fields of a subject and print their tokens.
    ///
    /// Values are given as FIELD=VALUE arguments, or, with `-`, as FIELD=VALUE
    /// lines on standard input (which keeps them out of shell history and ps).
    Tokenize {
        /// The subject's id.
        #[arg(long)]
        subject: String,
        /// A purpose the subject consented to (repeatable).
        #[arg(long = "purpose")]
        purposes: Vec<String>,
        /// Privacy-policy version in force at collection.
        #[arg(long, default_value = "")]
        policy_version: String,
        /// FIELD=VALUE pairs, or `-` to read them from standard input.
        #[arg(required = true)]
        fields: Vec<String>,
    },
    /// Reveal tokens for a purpose.
    Detokenize {
        /// Why the values are needed.
        #[arg(long)]
        purpose: String,
        /// The tokens.
        #[arg(required = true)]
        tokens: Vec<String>,
    },
    /// Find the tokens of an exact value of a look-up field.
    Lookup {
        /// Why the look-up is needed.
        #[arg(long)]
        purpose: String,
        /// The field, e.g. email.
        field: String,
        /// The value (`-` reads one line from standard input).
        value: String,
    },
    /// Correct the value behind a token (the token stays the same).
    Update {
        /// Why the value is corrected.
        #[arg(long, default_value = "")]
        purpose: String,
        /// The token.
        token: String,
        /// The new value (`-` reads one line from standard input).
        value: String,
    },
    /// Show the vault's status.
    Status,
    /// Measure throughput and latency of a running vault.
    Bench(crate::bench::BenchArgs),
}

fn read_stdin_line() -> std::io::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    Ok(trimmed)
}

fn value_arg(v: String) -> std::io::Result<Zeroizing<String>> {
    if v == "-" {
        read_stdin_line()
    } else {
        Ok(Zeroizing::new(v))
    }
}

fn parse_pairs(args: Vec<String>) -> Result<Vec<(String, Zeroizing<String>)>, String> {
    let mut lines = Vec::new();
    for a in args {
        if a == "-" {
            for l in std::io::stdin().lock().lines() {
                let l = Zeroizing::new(l.map_err(|e| format!("reading standard input: {e}"))?);
                if !l.trim().is_empty() {
                    lines.push(Zeroizing::new(l.to_string()));
                }
            }
        } else {
            lines.push(Zeroizing::new(a));
        }
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| match l.split_once('=') {
            Some((f, v)) => Ok((f.trim().to_owned(), Zeroizing::new(v.to_owned()))),
            None => Err(format!("item {} is not FIELD=VALUE", i + 1)),
        })
        .collect()
}

/// Prints rows as an aligned table with a header.
pub fn print_table(
    out: &mut impl Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// Name of a disclosure value, as in the proto.
pub fn disclosure_name(d: i32) -> &'static str {
    crate::proto::Disclosure::try_from(d)
        .map(|d| d.as_str_name())
        .unwrap_or("UNKNOWN")
}

/// The canonical name of a gRPC code, e.g. `INVALID_ARGUMENT`.
pub fn code_name(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, ch) in format!("{code:?}").chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

fn report(err: &ClientError) {
    eprintln!(
        "error: {} ({}): {}",
        code_name(err.code),
        err.code as i32,
        err.message
    );
    for (f, d) in &err.violations {
        eprintln!("  {f}: {d}");
    }
}

/// Runs `vaultctl` with the process's arguments.
pub fn main() -> ExitCode {
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
            report(&e);
            ExitCode::FAILURE
        }
        Err(Failure::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
    }
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

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.json;
    let mut out = std::io::stdout().lock();
    if let Command::Bench(args) = cli.command {
        return crate::bench::run(&cli.addr, args, json, &mut out).await;
    }
    let mut vault = VaultClient::connect(&cli.addr).await?;
    match cli.command {
        Command::Tokenize {
            subject,
            purposes,
            policy_version,
            fields,
        } => {
            let pairs = parse_pairs(fields).map_err(Failure::Usage)?;
            let borrowed: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(f, v)| (f.as_str(), v.as_str()))
                .collect();
            let purposes: Vec<&str> = purposes.iter().map(String::as_str).collect();
            let tokens = vault
                .tokenize(&subject, &borrowed, &purposes, &policy_version)
                .await?;
            if json {
                let v: Vec<_> = tokens
                    .iter()
                    .map(|t| serde_json::json!({"field": t.field, "token": t.token}))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| vec![t.field.clone(), t.token.clone()])
                    .collect();
                print_table(&mut out, &["FIELD", "TOKEN"], &rows)?;
            }
        }
        Command::Detokenize { purpose, tokens } => {
            let values = vault.detokenize(&tokens, &purpose).await?;
            if json {
                let v: Vec<_> = values
                    .iter()
                    .map(|d| {
                        serde_json::json!({"token": d.token, "field": d.field,
                            "disclosure": disclosure_name(d.disclosure), "value": d.value})
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                let rows: Vec<_> = values
                    .iter()
                    .map(|d| {
                        vec![
                            d.token.clone(),
                            d.field.clone(),
                            disclosure_name(d.disclosure).to_owned(),
                            d.value.clone(),
                        ]
                    })
                    .collect();
                print_table(&mut out, &["TOKEN", "FIELD", "DISCLOSURE", "VALUE"], &rows)?;
            }
        }
        Command::Lookup {
            purpose,
            field,
            value,
        } => {
            let value = value_arg(value)?;
            let tokens = vault.lookup(&field, &value, &purpose).await?;
            if json {
                writeln!(out, "{}", serde_json::json!(tokens))?;
            } else {
                let rows: Vec<_> = tokens.iter().map(|t| vec![t.clone()]).collect();
                print_table(&mut out, &["TOKEN"], &rows)?;
            }
        }
        Command::Update {
            purpose,
            token,
            value,
        } => {
            let value = value_arg(value)?;
            let version = vault.update(&token, &value, &purpose).await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"token": token, "value_version": version})
                )?;
            } else {
                print_table(
                    &mut out,
                    &["TOKEN", "VALUE_VERSION"],
                    &[vec![token, version.to_string()]],
                )?;
            }
        }
        Command::Status => {
            let s = vault.status().await?;
            let rows = vec![
                vec!["version".into(), s.version.clone()],
                vec!["sealed".into(), s.sealed.to_string()],
                vec!["uptime_seconds".into(), s.uptime_seconds.to_string()],
                vec![
                    "active_kek_version".into(),
                    s.active_kek_version.to_string(),
                ],
                vec!["schema_fields".into(), s.schema_fields.to_string()],
                vec!["root_key_source".into(), s.root_key_source.clone()],
                vec!["storage".into(), s.storage.clone()],
            ];
            if json {
                let v = serde_json::json!({
                    "version": s.version, "sealed": s.sealed, "uptime_seconds": s.uptime_seconds,
                    "active_kek_version": s.active_kek_version, "schema_fields": s.schema_fields,
                    "root_key_source": s.root_key_source, "storage": s.storage,
                });
                writeln!(out, "{v}")?;
            } else {
                print_table(&mut out, &["KEY", "VALUE"], &rows)?;
            }
        }
        Command::Bench(_) => {}
    }
    Ok(())
}
