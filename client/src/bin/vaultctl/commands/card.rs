//! `vaultctl card`: tokenize and reveal payment cards.

use crate::Failure;
use crate::input::read_stdin_line;
use crate::output::{print_table, write_disclosed};
use clap::Subcommand;
use std::io::Write;
use vault_client::VaultClient;

/// `vaultctl card`.
#[derive(Debug, Subcommand)]
pub enum CardCommand {
    /// Store a card: the number (and with --cvv the CVV) are read from
    /// standard input, one per line, never from the command line.
    ///
    /// Prints a token per field: the card number's keeps its length and
    /// last four and fails the Luhn check; the CVV's can be revealed once,
    /// within 15 minutes (by default), to the payment processor.
    Tokenize {
        /// The subject (customer) the card belongs to.
        #[arg(long)]
        subject: String,
        /// Expiry, MM/YY.
        #[arg(long)]
        expiry: Option<String>,
        /// The cardholder's name.
        #[arg(long)]
        name: Option<String>,
        /// Also read a CVV (second line of standard input).
        #[arg(long)]
        cvv: bool,
    },
    /// Reveal card tokens for a purpose (as your role allows: plain, BIN and
    /// last four, last four, or nothing); shows each card's brand.
    Reveal {
        /// Why the card is needed, e.g. payment_authorization.
        #[arg(long)]
        purpose: String,
        /// The tokens.
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

/// Runs a `card` command.
pub async fn run(
    command: CardCommand,
    vault: &mut VaultClient,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        CardCommand::Tokenize {
            subject,
            expiry,
            name,
            cvv,
        } => {
            let number = read_stdin_line()?;
            if number.trim().is_empty() {
                return Err(Failure::Usage(
                    "the card number goes on the first line of standard input".into(),
                ));
            }
            let cvv = if cvv { Some(read_stdin_line()?) } else { None };
            let mut fields = vec![("card_number", number.as_str())];
            if let Some(c) = &cvv {
                fields.push(("card_cvv", c.as_str()));
            }
            if let Some(e) = &expiry {
                fields.push(("card_expiry", e.as_str()));
            }
            if let Some(n) = &name {
                fields.push(("cardholder_name", n.as_str()));
            }
            let tokens = vault.tokenize(&subject, &fields, &[], "").await?;
            if json {
                let v: Vec<_> = tokens
                    .iter()
                    .map(|t| serde_json::json!({"field": t.field, "token": t.token, "brand": t.brand}))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| vec![t.field.clone(), t.token.clone(), t.brand.clone()])
                    .collect();
                print_table(out, &["FIELD", "TOKEN", "BRAND"], &rows)?;
            }
        }
        CardCommand::Reveal { purpose, tokens } => {
            let values = vault.detokenize(&tokens, &purpose).await?;
            write_disclosed(out, &values, json, true)?;
        }
    }
    Ok(())
}
