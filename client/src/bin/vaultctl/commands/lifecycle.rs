//! `vaultctl lifecycle`: retention report and the sweeper (privacy officer,
//! operators).

use crate::Failure;
use crate::output::print_table;
use clap::Subcommand;
use std::io::Write;
use vault_client::VaultClient;

/// `vaultctl lifecycle`.
#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// Per field class: values live, due soon, overdue (past retention, not
    /// yet swept: they answer EXPIRED already), held, shredded.
    Report {
        /// What counts as due soon, in days.
        #[arg(long, default_value_t = 30)]
        due_within_days: u32,
    },
    /// Run the retention sweeper now.
    Sweep,
}

/// Runs a `lifecycle` command.
pub async fn run(
    command: LifecycleCommand,
    vault: &mut VaultClient,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        LifecycleCommand::Report { due_within_days } => {
            let r = vault.lifecycle_report(due_within_days).await?;
            if json {
                let v: Vec<_> = r
                    .classes
                    .iter()
                    .map(|c| {
                        serde_json::json!({"class": c.class, "retention": c.retention,
                            "live": c.live, "due": c.due, "overdue": c.overdue,
                            "held": c.held, "shredded": c.shredded})
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                let rows: Vec<_> = r
                    .classes
                    .iter()
                    .map(|c| {
                        vec![
                            c.class.clone(),
                            c.retention.clone(),
                            c.live.to_string(),
                            c.due.to_string(),
                            c.overdue.to_string(),
                            c.held.to_string(),
                            c.shredded.to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    out,
                    &[
                        "CLASS",
                        "RETENTION",
                        "LIVE",
                        "DUE",
                        "OVERDUE",
                        "HELD",
                        "SHREDDED",
                    ],
                    &rows,
                )?;
            }
        }
        LifecycleCommand::Sweep => {
            let s = vault.sweep().await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"subjects": s.subjects, "fields": s.fields, "held": s.held})
                )?;
            } else {
                writeln!(
                    out,
                    "swept: {} values of {} subjects shredded; {} subjects held",
                    s.fields, s.subjects, s.held
                )?;
            }
        }
    }
    Ok(())
}
