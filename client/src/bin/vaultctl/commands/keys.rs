//! `vaultctl keys`: key custody, KEK rotation and retirement (operators).

use crate::Failure;
use crate::output::progress_bar;
use clap::Subcommand;
use std::io::Write;
use vault_client::VaultClient;

/// `vaultctl keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new key-encrypting key version the one that wraps new data
    /// keys, then wait (with a progress bar) while the vault rewraps every
    /// subject's data keys under it.
    Rotate {
        /// Return once the new version is active; the rewrap goes on in the
        /// vault (see `vaultctl status`).
        #[arg(long)]
        no_wait: bool,
    },
    /// Retire a KEK version: its key is destroyed. Refused for the active
    /// version and while data keys are still wrapped under it.
    Retire {
        /// The version, e.g. 1 or v1.
        version: String,
    },
    /// A KEK version is compromised: rotate if it is active, give every
    /// subject under it a new data key (its values re-encrypted), retire it.
    Compromised {
        /// The version, e.g. 1 or v1.
        version: String,
    },
}

/// A KEK version as typed: `3` or `v3`.
fn kek_version(text: &str) -> Result<u32, Failure> {
    text.trim_start_matches('v')
        .parse()
        .map_err(|_| Failure::Usage(format!("not a KEK version: {text:?} (e.g. v2)")))
}

/// Polls the vault's status until the rewrap after a rotation is done, with
/// a progress bar on a terminal; returns the subjects rewrapped.
async fn wait_for_rewrap(vault: &mut VaultClient, quiet: bool) -> Result<u64, Failure> {
    let bar = progress_bar(
        quiet,
        "rewrap {bar:40} {pos}/{len} subjects ({per_sec}, eta {eta})",
    );
    loop {
        let s = vault.status().await?;
        bar.set_length(s.rewrap_total);
        bar.set_position(s.rewrap_done);
        if !s.rewrap_pending && !s.rewrap_running {
            bar.finish();
            return Ok(s.rewrap_done);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Runs a `keys` command.
pub async fn run(
    command: KeysCommand,
    vault: &mut VaultClient,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        KeysCommand::Rotate { no_wait } => {
            let r = vault.rotate_keys().await?;
            if !json {
                writeln!(
                    out,
                    "KEK v{} is active (was v{}); rewrapping data keys",
                    r.active_kek_version, r.previous_kek_version
                )?;
            }
            let mut last = None;
            if !no_wait {
                last = Some(wait_for_rewrap(vault, json).await?);
            }
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "active_kek_version": r.active_kek_version,
                        "previous_kek_version": r.previous_kek_version,
                        "rewrapped_subjects": last,
                    })
                )?;
            } else if let Some(n) = last {
                writeln!(out, "rewrapped: {n} subjects")?;
            }
        }
        KeysCommand::Retire { version } => {
            let v = kek_version(&version)?;
            vault.retire_key(v).await?;
            if json {
                writeln!(out, "{}", serde_json::json!({"retired": v}))?;
            } else {
                writeln!(out, "KEK v{v} retired: its key is destroyed")?;
            }
        }
        KeysCommand::Compromised { version } => {
            let v = kek_version(&version)?;
            let r = vault.key_compromised(v).await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"retired": v, "subjects": r.subjects, "fields": r.fields,
                        "active_kek_version": r.active_kek_version})
                )?;
            } else {
                writeln!(
                    out,
                    "KEK v{v} replaced: {} subjects got new data keys, {} values re-encrypted; v{v} retired; v{} active",
                    r.subjects, r.fields, r.active_kek_version
                )?;
            }
        }
    }
    Ok(())
}
