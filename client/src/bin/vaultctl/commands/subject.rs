//! `vaultctl subject` (a subject's rights: erase, export, link, restrict,
//! legal hold, and the offline check of an erasure receipt) and `vaultctl
//! consent`.

use crate::Failure;
use crate::output::print_table;
use clap::Subcommand;
use std::io::Write;
use vault_client::{ClientError, VaultClient};

/// `vaultctl subject`.
#[derive(Debug, Subcommand)]
pub enum SubjectCommand {
    /// Erase a subject: its data key and every value are destroyed, its
    /// tokens answer ERASED. Prints the signed erasure receipt (JSON), which
    /// `vaultctl subject verify-receipt` checks.
    Erase {
        /// The subject's id.
        subject: String,
        /// Why (recorded in the audit trail: no personal data).
        #[arg(long)]
        reason: String,
    },
    /// Export everything held about a subject (GDPR 15 and 20): prints the
    /// JSON document (schema vault.subject-export.v1). It holds personal
    /// data, card numbers in clear: give it to the subject only.
    Export {
        /// The subject's id.
        subject: String,
        /// Why (recorded in the audit trail: no personal data).
        #[arg(long)]
        reason: String,
    },
    /// Link a travel companion to the account holder who supplied its data,
    /// with the holder's attestation of the companion's consent.
    Link {
        /// The companion's subject id.
        companion: String,
        /// The account holder's subject id.
        #[arg(long, required_unless_present = "unlink")]
        holder: Option<String>,
        /// The holder's attestation, as a reference (no personal data).
        #[arg(long, required_unless_present = "unlink")]
        attestation: Option<String>,
        /// Remove the companion's link instead.
        #[arg(long, conflicts_with_all = ["holder", "attestation"])]
        unlink: bool,
    },
    /// Check an erasure receipt offline against the vault's public key.
    VerifyReceipt {
        /// The receipt file (what `vaultctl subject erase` printed).
        receipt: std::path::PathBuf,
        /// The vault's public key (hex, as `vaultctl audit pubkey` prints it).
        #[arg(long)]
        pubkey: String,
    },
    /// Restrict processing (GDPR 18): stored, revealed to nobody.
    Restrict {
        /// The subject's id.
        subject: String,
        /// Why (recorded in the audit trail: no personal data).
        #[arg(long)]
        reason: String,
        /// Lift the restriction instead.
        #[arg(long)]
        lift: bool,
    },
    /// Set a legal hold (no erasure, no expiry) or release it.
    Hold {
        /// The subject's id.
        subject: String,
        /// The case the hold belongs to (optional with --release).
        #[arg(long, default_value = "")]
        case: String,
        /// Why (recorded in the audit trail: no personal data).
        #[arg(long)]
        reason: String,
        /// Release the hold instead.
        #[arg(long)]
        release: bool,
    },
}

/// `vaultctl consent`: grant or withdraw purposes a subject consented to.
#[derive(Debug, clap::Args)]
pub struct ConsentArgs {
    /// The subject's id.
    #[arg(long)]
    subject: String,
    /// A purpose to grant (repeatable).
    #[arg(long)]
    grant: Vec<String>,
    /// A purpose to withdraw (repeatable).
    #[arg(long)]
    withdraw: Vec<String>,
    /// The privacy-policy version the consent is given under.
    #[arg(long, default_value = "")]
    policy_version: String,
}

/// A receipt as `vaultctl subject erase` prints it: the signed bytes in
/// hex, and what they say, for people.
fn receipt_json(r: &vault_client::proto::ErasureReceipt) -> serde_json::Value {
    use vault_client::verify_export::hex;
    let body: vault_client::proto::ErasureReceiptBody =
        prost::Message::decode(r.body.as_slice()).unwrap_or_default();
    serde_json::json!({
        "subject_id": body.subject_id,
        "erased_at_unix_micros": body.erased_at_unix_micros,
        "fields": body.fields, "tokens": body.tokens,
        "index_entries": body.index_entries, "keys": body.keys,
        "reason": body.reason,
        "body": hex(&r.body), "signature": hex(&r.signature),
    })
}

/// `vaultctl subject verify-receipt`: checks the signature of the hex body
/// and that the readable fields say what the signed body says.
fn verify_receipt_file(
    file: &std::path::Path,
    pubkey: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    use vault_client::verify_export::unhex;
    let key = unhex(pubkey).filter(|k| k.len() == 32).ok_or_else(|| {
        Failure::Usage("--pubkey: give the 64 hex digits of `vaultctl audit pubkey`".into())
    })?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    let shown: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("{}: not a receipt: {e}", file.display())))?;
    let field = |k: &str| shown[k].as_str().and_then(unhex).unwrap_or_default();
    let receipt = vault_client::proto::ErasureReceipt {
        body: field("body"),
        signature: field("signature"),
    };
    let verdict = match vault_proto::receipt::verify_erasure(&key, &receipt) {
        None => Err("the signature does not verify with this key".to_owned()),
        Some(body) if receipt_json(&receipt) != shown => Err(format!(
            "signed for subject {} but the readable fields were changed",
            body.subject_id
        )),
        Some(body) => Ok(body),
    };
    let msg = match &verdict {
        Ok(b) => format!(
            "receipt verified: subject {} erased at {} µs ({} fields, {} tokens, {} keys)",
            b.subject_id, b.erased_at_unix_micros, b.fields, b.tokens, b.keys
        ),
        Err(why) => format!("receipt NOT valid: {why}"),
    };
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"ok": verdict.is_ok(), "message": msg})
        )?;
    } else {
        writeln!(out, "{msg}")?;
    }
    verdict.map(|_| ()).map_err(|why| {
        Failure::Call(ClientError {
            code: tonic::Code::DataLoss,
            message: why,
            violations: Vec::new(),
        })
    })
}

/// Runs the `subject` command that needs no vault (`verify-receipt`);
/// `None` if `command` needs one.
pub fn run_offline(
    command: &SubjectCommand,
    json: bool,
    out: &mut impl Write,
) -> Option<Result<(), Failure>> {
    match command {
        SubjectCommand::VerifyReceipt { receipt, pubkey } => {
            Some(verify_receipt_file(receipt, pubkey, json, out))
        }
        _ => None,
    }
}

/// Runs a `subject` command.
pub async fn run(
    command: SubjectCommand,
    vault: &mut VaultClient,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        SubjectCommand::Erase { subject, reason } => {
            let receipt = vault.erase(&subject, &reason).await?;
            writeln!(out, "{:#}", receipt_json(&receipt))?;
        }
        // Offline: `run_offline` ran it.
        SubjectCommand::VerifyReceipt { .. } => {}
        SubjectCommand::Export { subject, reason } => {
            let doc = vault.export_subject(&subject, &reason).await?;
            writeln!(out, "{doc}")?;
        }
        SubjectCommand::Link {
            companion,
            holder,
            attestation,
            ..
        } => {
            let linked = vault
                .link_companion(
                    &companion,
                    holder.as_deref().unwrap_or_default(),
                    attestation.as_deref().unwrap_or_default(),
                )
                .await?;
            if json {
                writeln!(out, "{}", serde_json::json!({"holder_id": linked}))?;
            } else if linked.is_empty() {
                writeln!(out, "subject {companion}: no account holder")?;
            } else {
                writeln!(out, "subject {companion}: companion of {linked}")?;
            }
        }
        SubjectCommand::Restrict {
            subject,
            reason,
            lift,
        } => {
            let restricted = vault.restrict(&subject, !lift, &reason).await?;
            if json {
                writeln!(out, "{}", serde_json::json!({"restricted": restricted}))?;
            } else {
                let state = if restricted {
                    "restricted"
                } else {
                    "not restricted"
                };
                writeln!(out, "subject {subject}: {state}")?;
            }
        }
        SubjectCommand::Hold {
            subject,
            case,
            reason,
            release,
        } => {
            let r = vault
                .set_legal_hold(&subject, !release, &case, &reason)
                .await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"held": r.held, "case_id": r.case_id})
                )?;
            } else if r.held {
                writeln!(
                    out,
                    "subject {subject}: under legal hold for case {}",
                    r.case_id
                )?;
            } else {
                writeln!(
                    out,
                    "subject {subject}: legal hold for case {} released",
                    r.case_id
                )?;
            }
        }
    }
    Ok(())
}

/// Runs `vaultctl consent`.
pub async fn consent(
    args: ConsentArgs,
    vault: &mut VaultClient,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let ConsentArgs {
        subject,
        grant,
        withdraw,
        policy_version,
    } = args;
    let g: Vec<&str> = grant.iter().map(String::as_str).collect();
    let w: Vec<&str> = withdraw.iter().map(String::as_str).collect();
    let r = vault.set_consent(&subject, &g, &w, &policy_version).await?;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"subject_id": subject, "purposes": r.purposes,
                "policy_version": r.policy_version})
        )?;
    } else {
        print_table(
            out,
            &["SUBJECT", "PURPOSES", "POLICY_VERSION"],
            &[vec![subject, r.purposes.join(","), r.policy_version]],
        )?;
    }
    Ok(())
}
