//! The token commands: `tokenize`, `detokenize`, `lookup`, `update`.

use crate::Failure;
use crate::input::{parse_pairs, value_arg};
use crate::output::{print_table, write_disclosed};
use clap::Subcommand;
use std::io::Write;
use vault_client::VaultClient;

/// `vaultctl tokenize`, `detokenize`, `lookup`, `update` (top-level commands).
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
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
        #[arg(long)]
        purpose: String,
        /// The token.
        #[arg(value_name = "TOKEN")]
        target: String,
        /// The new value (`-` reads one line from standard input).
        value: String,
    },
}

/// Runs a token command.
pub async fn run(
    command: TokenCommand,
    vault: &mut VaultClient,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        TokenCommand::Tokenize {
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
                    .map(|t| {
                        let mut v = serde_json::json!({"field": t.field, "token": t.token});
                        if !t.brand.is_empty() {
                            v["brand"] = serde_json::json!(t.brand);
                        }
                        v
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| vec![t.field.clone(), t.token.clone()])
                    .collect();
                print_table(out, &["FIELD", "TOKEN"], &rows)?;
            }
        }
        TokenCommand::Detokenize { purpose, tokens } => {
            let values = vault.detokenize(&tokens, &purpose).await?;
            write_disclosed(out, &values, json, false)?;
        }
        TokenCommand::Lookup {
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
                print_table(out, &["TOKEN"], &rows)?;
            }
        }
        TokenCommand::Update {
            purpose,
            target: token,
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
                    out,
                    &["TOKEN", "VALUE_VERSION"],
                    &[vec![token, version.to_string()]],
                )?;
            }
        }
    }
    Ok(())
}
