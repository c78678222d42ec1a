//! `vaultctl audit` (auditors): query and follow the trail, export it in
//! the verifiable format of [`vault_client::verify_export`], and verify it,
//! in the vault or offline.

use crate::Failure;
use crate::output::print_table;
use clap::Subcommand;
use std::io::Write;
use vault_client::verify_export::event_json;
use vault_client::{ClientError, VaultClient};

/// `vaultctl audit` commands (auditors).
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print audit events after a sequence number (JSON Lines with --json).
    Query {
        /// Only events after this sequence number (resume with the last one seen).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many events (at most 10000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Only this principal.
        #[arg(long, default_value = "")]
        principal: String,
        /// Only this role.
        #[arg(long, default_value = "")]
        role: String,
        /// Only events touching this subject.
        #[arg(long, default_value = "")]
        subject: String,
        /// Only events touching this field.
        #[arg(long, default_value = "")]
        field: String,
        /// Only this action (tokenize, reveal, lookup, update, ...).
        #[arg(long, default_value = "")]
        action: String,
        /// Only this outcome (ok, denied, invalid, unauthenticated, error, ...).
        #[arg(long, default_value = "")]
        outcome: String,
        /// Only this event type (request, auth_failure, vault_start, ...).
        #[arg(long, default_value = "")]
        event_type: String,
        /// Keep printing new events as they come (one line each), like
        /// `tail -f`; your own polling queries are left out. Ctrl-C stops.
        #[arg(short = 'f', long)]
        follow: bool,
        /// With --follow: how often to ask, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        interval_ms: u64,
    },
    /// Check the audit trail: in the vault, or offline an EXPORT file with
    /// the vault's public key.
    Verify {
        /// An export (`vaultctl audit export > FILE`); without it, ask the vault.
        export: Option<std::path::PathBuf>,
        /// The vault's checkpoint public key (hex, as `vaultctl audit pubkey` prints it).
        #[arg(long)]
        pubkey: Option<String>,
    },
    /// Write the audit trail as JSON Lines with a signed checkpoint.
    Export {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Print the Ed25519 public key that verifies exports (hex).
    Pubkey,
}

/// `vaultctl audit query --follow`: polls for events after the last one
/// seen and prints each as one line, leaving out this caller's own queries.
async fn follow_audit(
    vault: &mut VaultClient,
    mut query: vault_client::proto::QueryRequest,
    interval_ms: u64,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let me = vault.who_am_i().await?.name;
    loop {
        let events = vault.audit_query(query.clone()).await?;
        for e in &events {
            query.after_seq = e.seq;
            if e.event_type == "audit_query" && e.principal == me {
                continue;
            }
            if json {
                writeln!(out, "{}", event_json(e))?;
            } else {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    e.seq,
                    e.event_type,
                    e.principal,
                    e.role,
                    e.rpc.rsplit('/').next().unwrap_or(""),
                    e.action,
                    e.purpose,
                    e.outcome,
                    e.items.len()
                )?;
            }
        }
        out.flush()?;
        if events.len() < query.limit.max(1) as usize {
            tokio::time::sleep(std::time::Duration::from_millis(interval_ms)).await;
        }
    }
}

fn verify_export_file(
    file: &std::path::Path,
    pubkey: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    use vault_client::verify_export::{ExportVerdict, unhex, verify_export};
    let key = pubkey
        .and_then(unhex)
        .filter(|k| k.len() == 32)
        .ok_or_else(|| {
            Failure::Usage("--pubkey: give the 64 hex digits of `vaultctl audit pubkey`".into())
        })?;
    let f = std::fs::File::open(file)
        .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    // Line by line: an export of any length in bounded memory. A line that
    // cannot be read (not UTF-8) is a line that is not JSON, and the last.
    let mut failed = false;
    let lines = std::io::BufRead::lines(std::io::BufReader::new(f)).map_while(move |r| {
        if failed {
            return None;
        }
        Some(r.unwrap_or_else(|_| {
            failed = true;
            "\u{fffd} unreadable line".to_owned()
        }))
    });
    let verdict = verify_export(lines, &key);
    let (ok, msg, bad_seq) = match &verdict {
        ExportVerdict::Valid {
            events,
            checkpoint_seq,
        } => (
            true,
            format!(
                "export verified: {events} events (after event {}, as the vault signed), checkpoint at event {checkpoint_seq}",
                checkpoint_seq - events
            ),
            0,
        ),
        ExportVerdict::BadEvent { seq, problem } => (
            false,
            format!("export BROKEN at event {seq}: {problem}"),
            *seq,
        ),
        ExportVerdict::Bad(problem) => (false, format!("export BROKEN: {problem}"), 0),
    };
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"ok": ok, "first_bad_seq": bad_seq, "message": msg})
        )?;
    } else {
        writeln!(out, "{msg}")?;
    }
    if ok {
        Ok(())
    } else {
        Err(Failure::Call(ClientError {
            code: tonic::Code::DataLoss,
            message: msg,
            violations: Vec::new(),
        }))
    }
}

/// Runs the `audit` command that needs no vault (`verify FILE`); `None` if
/// `command` needs one.
pub fn run_offline(
    command: &AuditCommand,
    json: bool,
    out: &mut impl Write,
) -> Option<Result<(), Failure>> {
    match command {
        AuditCommand::Verify {
            export: Some(file),
            pubkey,
        } => Some(verify_export_file(file, pubkey.as_deref(), json, out)),
        _ => None,
    }
}

/// Runs an `audit` command.
pub async fn run(
    command: AuditCommand,
    vault: &mut VaultClient,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        AuditCommand::Query {
            after,
            limit,
            principal,
            role,
            subject,
            field,
            action,
            outcome,
            event_type,
            follow,
            interval_ms,
        } => {
            let query = vault_client::proto::QueryRequest {
                after_seq: after,
                limit,
                principal,
                role,
                subject_id: subject,
                field,
                action,
                outcome,
                event_type,
                ..Default::default()
            };
            if follow {
                return follow_audit(vault, query, interval_ms, json, out).await;
            }
            let events = vault.audit_query(query).await?;
            if json {
                for e in &events {
                    writeln!(out, "{}", event_json(e))?;
                }
            } else {
                let rows: Vec<_> = events
                    .iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            e.event_type.clone(),
                            e.principal.clone(),
                            e.role.clone(),
                            e.rpc.rsplit('/').next().unwrap_or("").to_owned(),
                            e.action.clone(),
                            e.purpose.clone(),
                            e.outcome.clone(),
                            e.items.len().to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    out,
                    &[
                        "SEQ",
                        "TYPE",
                        "PRINCIPAL",
                        "ROLE",
                        "RPC",
                        "ACTION",
                        "PURPOSE",
                        "OUTCOME",
                        "ITEMS",
                    ],
                    &rows,
                )?;
            }
        }
        AuditCommand::Export { after } => {
            // Written as the chunks come: memory does not grow with the trail.
            let mut stream = vault.audit_export_stream(after).await?;
            let mut first = true;
            while let Some(chunk) = stream.message().await.map_err(ClientError::from)? {
                if first {
                    writeln!(
                        out,
                        "{}",
                        vault_client::verify_export::header_line(
                            chunk.after_seq,
                            &chunk.start_prev_hash
                        )
                    )?;
                    first = false;
                }
                for e in &chunk.events {
                    writeln!(out, "{}", vault_client::verify_export::event_line(e))?;
                }
                if let Some(c) = &chunk.checkpoint {
                    writeln!(out, "{}", vault_client::verify_export::checkpoint_line(c))?;
                }
            }
        }
        AuditCommand::Pubkey => {
            let key = vault.audit_public_key().await?;
            writeln!(out, "{}", vault_client::verify_export::hex(&key))?;
        }
        AuditCommand::Verify { .. } => {
            let v = vault.audit_verify().await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"ok": v.ok, "good": v.good,
                        "first_bad_seq": v.first_bad_seq, "problem": v.problem})
                )?;
            } else if v.ok {
                writeln!(out, "audit trail verified: {} events", v.good)?;
            } else {
                writeln!(
                    out,
                    "audit trail BROKEN at event {}: {} ({} events before it verified)",
                    v.first_bad_seq, v.problem, v.good
                )?;
            }
            if !v.ok {
                return Err(Failure::Call(ClientError {
                    code: tonic::Code::DataLoss,
                    message: format!("audit trail broken at event {}", v.first_bad_seq),
                    violations: Vec::new(),
                }));
            }
        }
    }
    Ok(())
}
