//! The vault's custody and state: `unseal`, `seal`, `backup` (operators),
//! `whoami` and `status`.

use crate::Failure;
use crate::output::{print_table, progress_bar};
use clap::Subcommand;
use std::io::Write;
use vault_client::VaultClient;

/// `vaultctl unseal`, `seal`, `backup` (top-level commands).
#[derive(Debug, Subcommand)]
pub enum CustodyCommand {
    /// Give one custodian's share to a sealed vault (the share is read from
    /// FILE, or standard input with `-`; never from the command line).
    /// Prints the progress; with the threshold reached, waits until the
    /// vault serves.
    Unseal {
        /// The share file `vaultd init --shares` wrote, or - for stdin.
        file: String,
    },
    /// Seal the vault (operators): it drops its keys and needs the
    /// threshold of shares again.
    Seal,
    /// Write a backup of the store to FILE (operators; with a progress
    /// bar). `vaultd restore --from FILE` restores it.
    Backup {
        /// The file to create (it must not exist).
        file: std::path::PathBuf,
        /// Only the erasure and revocation journals, to replay on an
        /// older backup (`vaultd restore --journal FILE`).
        #[arg(long)]
        journal_only: bool,
    },
}

/// `vaultctl whoami`, `status` (top-level commands).
#[derive(Debug, Subcommand)]
pub enum InfoCommand {
    /// Show who the vault thinks you are.
    Whoami,
    /// Show the vault's status.
    Status,
}

/// Runs `unseal`, `seal` or `backup`.
pub async fn run_custody(
    command: CustodyCommand,
    vault: &mut VaultClient,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        CustodyCommand::Unseal { file } => {
            let text = zeroize::Zeroizing::new(if file == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
                t
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| Failure::Usage(format!("{file}: {e}")))?
            });
            let r = vault.unseal(text.trim()).await?;
            if !r.sealed {
                // The vault restarts its services: wait until they answer.
                for _ in 0..300 {
                    if vault.health("").await.is_ok_and(|h| {
                        h == tonic_health::pb::health_check_response::ServingStatus::Serving
                    }) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"sealed": r.sealed, "progress": r.progress, "threshold": r.threshold})
                )?;
            } else if r.sealed {
                writeln!(
                    out,
                    "share accepted: {} of {} given; still sealed",
                    r.progress, r.threshold
                )?;
            } else {
                writeln!(out, "unsealed")?;
            }
        }
        CustodyCommand::Backup { file, journal_only } => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
                .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
            let mut w = std::io::BufWriter::new(f);
            let bar = progress_bar(
                json,
                "backup {bar:40} {bytes}/~{total_bytes} ({bytes_per_sec})",
            );
            let result = vault
                .backup(journal_only, &mut w, |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })
                .await;
            bar.finish_and_clear();
            let bytes = match result {
                Ok(b) => b,
                Err(e) => {
                    // A cut-short backup must not be mistaken for one.
                    drop(w);
                    let _ = std::fs::remove_file(&file);
                    return Err(e.into());
                }
            };
            std::io::Write::flush(&mut w)?;
            w.get_ref().sync_all()?;
            if json {
                writeln!(out, "{}", serde_json::json!({"file": file, "bytes": bytes}))?;
            } else {
                writeln!(out, "backup written: {} ({bytes} bytes)", file.display())?;
            }
        }
        CustodyCommand::Seal => {
            vault.seal().await?;
            if json {
                writeln!(out, "{}", serde_json::json!({"sealed": true}))?;
            } else {
                writeln!(
                    out,
                    "sealed: the vault dropped its keys; unseal with the threshold of shares"
                )?;
            }
        }
    }
    Ok(())
}

/// Runs `whoami` or `status`.
pub async fn run_info(
    command: InfoCommand,
    vault: &mut VaultClient,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        InfoCommand::Whoami => {
            let w = vault.who_am_i().await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"name": w.name, "role": w.role, "auth": w.auth})
                )?;
            } else {
                print_table(
                    out,
                    &["NAME", "ROLE", "AUTH"],
                    &[vec![w.name, w.role, w.auth]],
                )?;
            }
        }
        InfoCommand::Status => {
            let s = vault.status().await?;
            let mut rows = vec![
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
                vec![
                    "kek_versions".into(),
                    s.kek_versions
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                ],
                vec![
                    "kek_warning".into(),
                    if s.kek_warning.is_empty() {
                        "none".into()
                    } else {
                        s.kek_warning.clone()
                    },
                ],
                vec![
                    "rewrap".into(),
                    if s.rewrap_pending || s.rewrap_running {
                        format!("{} of {} subjects", s.rewrap_done, s.rewrap_total)
                    } else {
                        "none pending".into()
                    },
                ],
            ];
            if !s.node_id.is_empty() {
                rows.push(vec!["node_id".into(), s.node_id.clone()]);
                rows.push(vec![
                    "peers".into(),
                    if s.peers.is_empty() {
                        "none".into()
                    } else {
                        s.peers.join(",")
                    },
                ]);
                rows.push(vec![
                    "database_reachable".into(),
                    s.database_reachable.to_string(),
                ]);
                rows.push(vec![
                    "database_round_trips".into(),
                    s.database_round_trips.to_string(),
                ]);
            }
            if json {
                let v = serde_json::json!({
                    "node_id": s.node_id, "peers": s.peers,
                    "database_reachable": s.database_reachable,
                    "database_round_trips": s.database_round_trips,
                    "version": s.version, "sealed": s.sealed, "uptime_seconds": s.uptime_seconds,
                    "active_kek_version": s.active_kek_version, "schema_fields": s.schema_fields,
                    "root_key_source": s.root_key_source, "storage": s.storage,
                    "kek_versions": s.kek_versions, "rewrap_pending": s.rewrap_pending,
                    "rewrap_running": s.rewrap_running, "rewrap_total": s.rewrap_total,
                    "rewrap_done": s.rewrap_done,
                    "active_kek_expires_unix": s.active_kek_expires_unix,
                    "kek_warning": s.kek_warning,
                });
                writeln!(out, "{v}")?;
            } else {
                print_table(out, &["KEY", "VALUE"], &rows)?;
            }
        }
    }
    Ok(())
}
