//! The `vaultctl` command line: tokenize, detokenize, lookup, update,
//! consent, principal, policy, whoami, status, bench. A table for people, `--json` for scripts; a failed call prints the
//! gRPC code and message (and each field violation) and exits non-zero.

use crate::{ClientError, Target, TlsOptions, VaultClient};
use clap::{Parser, Subcommand};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use zeroize::Zeroizing;

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

/// `vaultctl principal` commands.
#[derive(Debug, Subcommand)]
pub enum PrincipalCommand {
    /// Issue a bearer token for NAME in a role (operators). Prints the token
    /// once. For a role that may see personal data, this only requests it:
    /// it prints the token's first part and the grant's id, and a second
    /// principal (a privacy officer) approves it with `principal approve`.
    Create {
        /// The principal's name, e.g. alice@travel.example.
        name: String,
        /// Its role, e.g. billing_clerk.
        #[arg(long)]
        role: String,
        /// Lifetime: seconds, or a number with s, m, h or d (e.g. 8h).
        #[arg(long, default_value = "8h")]
        ttl: String,
    },
    /// Approve a pending grant by its id (a second principal, e.g. a privacy
    /// officer). Prints the token's second part once: the grantee's token is
    /// the requester's part followed at once by this one.
    Approve {
        /// The grant's id (`principal create` printed it).
        id: String,
        /// The name the grant is for, as the requester said it: a grant for
        /// another name is refused.
        #[arg(long)]
        name: String,
        /// The role the grant is for: a grant of another role is refused.
        #[arg(long)]
        role: String,
    },
    /// Reject a pending grant (an approver), or withdraw it (its requester).
    Reject {
        /// The grant's id.
        id: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// List issued bearer tokens and pending grants (never their secrets).
    List,
    /// Revoke a bearer token by id.
    Revoke {
        /// The token's id.
        id: String,
    },
}

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

/// `vaultctl policy` commands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files offline (for CI of policy changes); no vault needed.
    Check {
        /// Directory of vault.cedarschema and *.cedar.
        #[arg(long, default_value = "policies")]
        dir: std::path::PathBuf,
        /// The field schema (default: DIR/fields.toml).
        #[arg(long)]
        schema: Option<std::path::PathBuf>,
    },
    /// Which policy permits or forbids a principal's actions on a field.
    ///
    /// Asks the running vault; with --dir, decides offline from policy files
    /// (then give --role).
    Explain {
        /// A principal the vault knows (bearer-token name or certificate principal).
        #[arg(long)]
        principal: Option<String>,
        /// Or a role.
        #[arg(long)]
        role: Option<String>,
        /// The field.
        #[arg(long, required_unless_present = "grant")]
        field: Option<String>,
        /// The stated purpose.
        #[arg(long, required_unless_present = "grant")]
        purpose: Option<String>,
        /// Or explain the grant of this role instead of a field: whether it
        /// is a data role (granted only by two principals) and why, and
        /// whether the principal or role may request and approve it.
        #[arg(long, conflicts_with_all = ["field", "purpose"])]
        grant: Option<String>,
        /// With --grant: the token life to explain it for (seconds, or a
        /// number with s, m, h or d); default one hour.
        #[arg(long, requires = "grant")]
        ttl: Option<String>,
        /// A purpose the subject consented to (repeatable).
        #[arg(long = "consented")]
        consented: Vec<String>,
        /// Assume the subject's processing is restricted.
        #[arg(long)]
        restricted: bool,
        /// Decide offline from this policy directory.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// The field schema for --dir (default: DIR/fields.toml).
        #[arg(long)]
        schema: Option<std::path::PathBuf>,
    },
    /// Reload the running vault's policy (operators).
    Reload,
}

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

/// Polls the vault's status until the rewrap after a rotation is done, with
/// a progress bar on a terminal; returns the subjects rewrapped.
async fn wait_for_rewrap(vault: &mut VaultClient, quiet: bool) -> Result<u64, Failure> {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "rewrap {bar:40} {pos}/{len} subjects ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
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

/// A receipt as `vaultctl subject erase` prints it: the signed bytes in
/// hex, and what they say, for people.
fn receipt_json(r: &crate::proto::ErasureReceipt) -> serde_json::Value {
    use crate::audit::hex;
    let body: crate::proto::ErasureReceiptBody =
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
    use crate::audit::unhex;
    let key = unhex(pubkey).filter(|k| k.len() == 32).ok_or_else(|| {
        Failure::Usage("--pubkey: give the 64 hex digits of `vaultctl audit pubkey`".into())
    })?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    let shown: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("{}: not a receipt: {e}", file.display())))?;
    let field = |k: &str| shown[k].as_str().and_then(unhex).unwrap_or_default();
    let receipt = crate::proto::ErasureReceipt {
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
        #[arg(long)]
        purpose: String,
        /// The token.
        #[arg(value_name = "TOKEN")]
        target: String,
        /// The new value (`-` reads one line from standard input).
        value: String,
    },
    /// Grant or withdraw purposes a subject consented to.
    Consent {
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
    },
    /// Tokenize and reveal payment cards.
    #[command(subcommand)]
    Card(CardCommand),
    /// A subject's rights (privacy officer): erase, restrict, legal hold.
    #[command(subcommand)]
    Subject(SubjectCommand),
    /// Retention: what is due, and the sweeper (privacy officer, operators).
    #[command(subcommand)]
    Lifecycle(LifecycleCommand),
    /// Key custody: KEK rotation (operators).
    #[command(subcommand)]
    Keys(KeysCommand),
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
    /// Manage bearer tokens (operators).
    #[command(subcommand)]
    Principal(PrincipalCommand),
    /// Check, explain and reload access policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Query and verify the audit trail (auditors).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Show who the vault thinks you are.
    Whoami,
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
/// `vaultctl audit query --follow`: polls for events after the last one
/// seen and prints each as one line, leaving out this caller's own queries.
async fn follow_audit(
    vault: &mut VaultClient,
    mut query: crate::proto::QueryRequest,
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

/// Detokenize results, as JSON or a table (with a BRAND column for cards).
fn write_disclosed(
    out: &mut impl Write,
    values: &[crate::proto::Disclosed],
    json: bool,
    brand: bool,
) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", disclosed_json(values));
    }
    let rows: Vec<Vec<String>> = values
        .iter()
        .map(|d| {
            let mut row = vec![
                d.token.clone(),
                d.field.clone(),
                disclosure_name(d.disclosure).to_owned(),
            ];
            if brand {
                row.push(d.brand.clone());
            }
            row.push(d.value.clone());
            row
        })
        .collect();
    let header: &[&str] = if brand {
        &["TOKEN", "FIELD", "DISCLOSURE", "BRAND", "VALUE"]
    } else {
        &["TOKEN", "FIELD", "DISCLOSURE", "VALUE"]
    };
    print_table(out, header, &rows)
}

/// Detokenize results as JSON (`brand` only for cards).
fn disclosed_json(values: &[crate::proto::Disclosed]) -> serde_json::Value {
    values
        .iter()
        .map(|d| {
            let mut v = serde_json::json!({"token": d.token, "field": d.field,
                "disclosure": disclosure_name(d.disclosure), "value": d.value});
            if !d.brand.is_empty() {
                v["brand"] = serde_json::json!(d.brand);
            }
            v
        })
        .collect()
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

/// Parses a lifetime: seconds, or a number followed by s, m, h or d.
pub fn parse_ttl(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 's'),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The connection the global options describe.
pub fn target(cli: &Cli) -> Result<Target, Failure> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))
    };
    // TLS options with an http:// address would be dropped by the
    // transport and the token and data sent in clear: refuse before
    // anything is read or sent.
    let tls_options: Vec<&str> = [
        ("--ca-cert", cli.ca_cert.is_some()),
        ("--client-cert", cli.client_cert.is_some()),
        ("--client-key", cli.client_key.is_some()),
        ("--tls-domain", cli.tls_domain.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    if !tls_options.is_empty() && crate::is_plaintext_addr(&cli.addr) {
        return Err(Failure::Usage(format!(
            "{} asks for TLS, but the address is a plaintext http:// one: nothing was sent; use --addr https://HOST:PORT (or HOST:PORT)",
            tls_options.join(" and ")
        )));
    }
    if tls_options.is_empty() && cli.addr.to_ascii_lowercase().starts_with("https://") {
        return Err(Failure::Usage(
            "an https:// address needs --ca-cert (the CA of the vault's certificate)".into(),
        ));
    }
    let tls = match &cli.ca_cert {
        None if cli.client_cert.is_some() => {
            return Err(Failure::Usage("--client-cert needs --ca-cert (TLS)".into()));
        }
        None => None,
        Some(ca) => {
            if cli.client_cert.is_some() != cli.client_key.is_some() {
                return Err(Failure::Usage(
                    "give both --client-cert and --client-key, or neither".into(),
                ));
            }
            Some(TlsOptions {
                ca_pem: read(ca)?,
                client_cert_pem: cli.client_cert.as_deref().map(read).transpose()?,
                client_key_pem: cli.client_key.as_deref().map(read).transpose()?,
                domain: cli.tls_domain.clone(),
            })
        }
    };
    Ok(Target {
        addr: cli.addr.clone(),
        tls,
        token: cli.token.clone().map(Zeroizing::new),
    })
}

fn print_principals(
    out: &mut impl Write,
    json: bool,
    ps: &[crate::proto::PrincipalInfo],
) -> std::io::Result<()> {
    if json {
        let v: Vec<_> = ps
            .iter()
            .map(|p| {
                serde_json::json!({"id": p.id, "name": p.name, "role": p.role,
                    "created_at": p.created_at, "expires_at": p.expires_at,
                    "revoked_at": p.revoked_at, "created_by": p.created_by,
                    "state": p.state, "granted_via": p.granted_via,
                    "approved_by": p.approved_by, "approved_at": p.approved_at,
                    "approval_deadline": p.approval_deadline})
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(v))
    } else {
        let rows: Vec<_> = ps
            .iter()
            .map(|p| {
                vec![
                    p.id.clone(),
                    p.name.clone(),
                    p.role.clone(),
                    p.expires_at.to_string(),
                    if p.revoked_at == 0 {
                        "-".into()
                    } else {
                        p.revoked_at.to_string()
                    },
                    p.state.clone(),
                    p.granted_via.clone(),
                    if p.approved_by.is_empty() {
                        "-".into()
                    } else {
                        p.approved_by.clone()
                    },
                ]
            })
            .collect();
        print_table(
            out,
            &[
                "ID",
                "NAME",
                "ROLE",
                "EXPIRES_AT",
                "REVOKED_AT",
                "STATE",
                "GRANTED_VIA",
                "APPROVED_BY",
            ],
            &rows,
        )
    }
}

/// One audit event as JSON (the export schema: the proto's field names).
pub fn event_json(e: &crate::proto::AuditEvent) -> serde_json::Value {
    let items: Vec<_> = e
        .items
        .iter()
        .map(|i| {
            serde_json::json!({"field": i.field, "token": i.token,
                "disclosure": i.disclosure, "subject_id": i.subject_id})
        })
        .collect();
    let mut v = serde_json::json!({
        "seq": e.seq, "time_unix_micros": e.time_unix_micros, "event_type": e.event_type,
        "principal": e.principal, "role": e.role, "auth": e.auth, "peer": e.peer,
        "request_id": e.request_id, "rpc": e.rpc, "action": e.action, "purpose": e.purpose,
        "subject_id": e.subject_id, "items": items, "outcome": e.outcome,
        "status_code": e.status_code, "detail": e.detail,
    });
    if let (Some(c), Some(map)) = (&e.checkpoint, v.as_object_mut()) {
        map.insert(
            "checkpoint".into(),
            serde_json::json!({"seq": c.seq, "hash": crate::audit::hex(&c.hash),
                "signature": crate::audit::hex(&c.signature),
                "time_unix_micros": c.time_unix_micros}),
        );
    }
    v
}

fn decision_json(d: &crate::proto::ExplainedDecision) -> serde_json::Value {
    serde_json::json!({"action": d.action, "allowed": d.allowed,
        "policies": d.policies, "errors": d.errors})
}

/// The token life `--ttl` asks a grant to be explained for (0 if not
/// given: the vault then explains it for an hour).
fn explain_ttl(ttl: Option<&str>) -> Result<u64, Failure> {
    match ttl {
        // The vault explains for an hour when given 0 (policy.proto).
        None => Ok(0),
        Some(t) => parse_ttl(t).ok_or_else(|| {
            Failure::Usage(format!(
                "--ttl {t:?}: give seconds or a number with s, m, h or d"
            ))
        }),
    }
}

/// Why a decision is what it is, in words.
fn decision_why(d: &crate::proto::ExplainedDecision) -> String {
    if d.policies.is_empty() {
        if d.allowed {
            String::new()
        } else {
            "no policy permits it (default deny)".into()
        }
    } else {
        d.policies.join(", ")
    }
}

fn print_grant_explained(
    out: &mut impl Write,
    json: bool,
    e: &crate::proto::ExplainResponse,
    g: &crate::proto::GrantExplained,
) -> std::io::Result<()> {
    let none = crate::proto::ExplainedDecision::default();
    let (request, approve) = (
        g.request.as_ref().unwrap_or(&none),
        g.approve.as_ref().unwrap_or(&none),
    );
    if json {
        let v = serde_json::json!({"principal": e.principal, "role": e.role,
            "grant_role": g.role, "data_role": g.data_role, "because": g.because,
            "request": decision_json(request), "approve": decision_json(approve)});
        return writeln!(out, "{v}");
    }
    if g.data_role {
        writeln!(
            out,
            "{} is a data role (it may act on personal data): a token is requested by one principal and approved by another, never issued by one",
            g.role
        )?;
        writeln!(out, "  because: {}", g.because.join(", "))?;
    } else {
        writeln!(
            out,
            "{} sees no personal data: one principal allowed to request it issues it at once",
            g.role
        )?;
    }
    writeln!(out, "{} (role {}):", e.principal, e.role)?;
    print_decisions(out, [request, approve])
}

fn print_explained(
    out: &mut impl Write,
    json: bool,
    e: &crate::proto::ExplainResponse,
) -> std::io::Result<()> {
    if let Some(g) = &e.grant {
        return print_grant_explained(out, json, e, g);
    }
    if json {
        let d: Vec<_> = e.decisions.iter().map(decision_json).collect();
        let v = serde_json::json!({"principal": e.principal, "role": e.role,
            "disclosure": disclosure_name(e.disclosure), "decisions": d});
        return writeln!(out, "{v}");
    }
    writeln!(
        out,
        "{} (role {}): Detokenize answers {}",
        e.principal,
        e.role,
        disclosure_name(e.disclosure)
    )?;
    print_decisions(out, &e.decisions)
}

/// A table of decisions: action, allow or deny, and why.
fn print_decisions<'a>(
    out: &mut impl Write,
    decisions: impl IntoIterator<Item = &'a crate::proto::ExplainedDecision>,
) -> std::io::Result<()> {
    let rows: Vec<_> = decisions
        .into_iter()
        .map(|d| {
            vec![
                d.action.clone(),
                if d.allowed { "allow" } else { "deny" }.into(),
                decision_why(d),
            ]
        })
        .collect();
    print_table(out, &["ACTION", "DECISION", "BECAUSE"], &rows)
}

#[cfg(feature = "offline-policy")]
mod offline {
    use super::Failure;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    pub(super) fn load(
        dir: &Path,
        schema: Option<&Path>,
    ) -> Result<vault::policy::PolicyEngine, Failure> {
        let schema_path = schema.map_or_else(|| dir.join("fields.toml"), Path::to_path_buf);
        let fields = vault::schema::Schema::load(&schema_path, 1 << 20)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        vault::policy::PolicyEngine::load(Some(PathBuf::from(dir)), Arc::new(fields))
            .map_err(|e| Failure::Usage(e.to_string()))
    }

    /// The explanation of the grant of `granted`, for a token living `ttl`
    /// seconds, for any principal in `role`.
    pub(super) fn explain_grant(
        policy: &vault::policy::PolicyEngine,
        role: &str,
        granted: &str,
        ttl: u64,
    ) -> Result<crate::proto::ExplainResponse, Failure> {
        let check =
            |r| vault::auth::credentials::check_role(r).map_err(|e| Failure::Usage(e.into()));
        check(role)?;
        check(granted)?;
        Ok(vault::policy::explain::explain_grant_response(
            policy,
            &any_in(role),
            granted,
            ttl,
        ))
    }

    fn any_in(role: &str) -> vault::model::Principal {
        vault::model::Principal {
            name: Arc::from("(any principal)"),
            role: Arc::from(role),
            method: vault::model::AuthMethod::Bearer,
            credential_id: None,
            data_capable: true,
        }
    }

    pub(super) fn explain(
        policy: &vault::policy::PolicyEngine,
        role: &str,
        field: &str,
        purpose: &str,
        consented: &[String],
        restricted: bool,
    ) -> Result<crate::proto::ExplainResponse, Failure> {
        use vault::policy::{Action, SubjectContext};
        let fields = policy.fields().clone();
        let def = fields
            .field(field)
            .ok_or_else(|| Failure::Usage(format!("unknown field {field:?}")))?;
        vault::auth::credentials::check_role(role).map_err(|e| Failure::Usage(e.into()))?;
        let who = any_in(role);
        let ctx = SubjectContext::new(
            &fields,
            consented.iter().map(String::as_str),
            restricted,
            "",
        );
        Ok(vault::policy::explain::explain_response(
            policy,
            &who,
            def,
            purpose,
            &ctx,
            &Action::ON_FIELD,
        ))
    }
}

fn verify_export_file(
    file: &std::path::Path,
    pubkey: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    use crate::audit::{ExportVerdict, unhex, verify_export};
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

/// Runs the commands that need no vault; `None` if `command` needs one.
fn run_offline(command: &Command, json: bool, out: &mut impl Write) -> Option<Result<(), Failure>> {
    if let Command::Subject(SubjectCommand::VerifyReceipt { receipt, pubkey }) = command {
        return Some(verify_receipt_file(receipt, pubkey, json, out));
    }
    if let Command::Audit(AuditCommand::Verify {
        export: Some(file),
        pubkey,
    }) = command
    {
        return Some(verify_export_file(file, pubkey.as_deref(), json, out));
    }
    let Command::Policy(p) = command else {
        return None;
    };
    #[cfg(feature = "offline-policy")]
    match p {
        PolicyCommand::Check { dir, schema } => Some((|| {
            let policy = offline::load(dir, schema.as_deref())?;
            let s = policy.summary();
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"valid": true, "policies": s.policies, "files": s.files})
                )?;
            } else {
                writeln!(
                    out,
                    "policies are valid: {} policies in {} files",
                    s.policies,
                    s.files.len()
                )?;
            }
            Ok(())
        })()),
        PolicyCommand::Explain {
            role,
            field,
            purpose,
            grant,
            ttl,
            consented,
            restricted,
            dir: Some(dir),
            schema,
            ..
        } => Some((|| {
            let role = role
                .as_deref()
                .ok_or_else(|| Failure::Usage("offline explain (--dir) needs --role".into()))?;
            let policy = offline::load(dir, schema.as_deref())?;
            let e = match (grant, field, purpose) {
                (Some(g), _, _) => {
                    let ttl = match explain_ttl(ttl.as_deref())? {
                        0 => vault::policy::explain::DEFAULT_EXPLAINED_TTL_SECS,
                        t => t,
                    };
                    offline::explain_grant(&policy, role, g, ttl)?
                }
                (None, Some(f), Some(p)) => {
                    offline::explain(&policy, role, f, p, consented, *restricted)?
                }
                _ => {
                    return Err(Failure::Usage(
                        "give --field and --purpose, or --grant".into(),
                    ));
                }
            };
            print_explained(out, json, &e)?;
            Ok(())
        })()),
        _ => None,
    }
    #[cfg(not(feature = "offline-policy"))]
    match p {
        PolicyCommand::Check { .. } | PolicyCommand::Explain { dir: Some(_), .. } => Some(Err(
            Failure::Usage("this vaultctl was built without the offline-policy feature".into()),
        )),
        _ => None,
    }
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.json;
    let mut out = std::io::stdout().lock();
    if let Some(r) = run_offline(&cli.command, json, &mut out) {
        return r;
    }
    let target = target(&cli)?;
    if let Command::Bench(args) = cli.command {
        return crate::bench::run(&target, args, json, &mut out).await;
    }
    let mut vault: VaultClient = target.connect().await?;
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
                print_table(&mut out, &["FIELD", "TOKEN"], &rows)?;
            }
        }
        Command::Card(CardCommand::Tokenize {
            subject,
            expiry,
            name,
            cvv,
        }) => {
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
                print_table(&mut out, &["FIELD", "TOKEN", "BRAND"], &rows)?;
            }
        }
        Command::Lifecycle(LifecycleCommand::Report { due_within_days }) => {
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
                    &mut out,
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
        Command::Lifecycle(LifecycleCommand::Sweep) => {
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
        Command::Subject(SubjectCommand::Erase { subject, reason }) => {
            let receipt = vault.erase(&subject, &reason).await?;
            writeln!(out, "{:#}", receipt_json(&receipt))?;
        }
        Command::Subject(SubjectCommand::VerifyReceipt { .. }) => {}
        Command::Subject(SubjectCommand::Export { subject, reason }) => {
            let doc = vault.export_subject(&subject, &reason).await?;
            writeln!(out, "{doc}")?;
        }
        Command::Subject(SubjectCommand::Link {
            companion,
            holder,
            attestation,
            ..
        }) => {
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
        Command::Subject(SubjectCommand::Restrict {
            subject,
            reason,
            lift,
        }) => {
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
        Command::Subject(SubjectCommand::Hold {
            subject,
            case,
            reason,
            release,
        }) => {
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
        Command::Card(CardCommand::Reveal { purpose, tokens }) => {
            let values = vault.detokenize(&tokens, &purpose).await?;
            write_disclosed(&mut out, &values, json, true)?;
        }
        Command::Detokenize { purpose, tokens } => {
            let values = vault.detokenize(&tokens, &purpose).await?;
            write_disclosed(&mut out, &values, json, false)?;
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
                    &mut out,
                    &["TOKEN", "VALUE_VERSION"],
                    &[vec![token, version.to_string()]],
                )?;
            }
        }
        Command::Keys(KeysCommand::Rotate { no_wait }) => {
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
                last = Some(wait_for_rewrap(&mut vault, json).await?);
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
        Command::Unseal { file } => {
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
        Command::Backup { file, journal_only } => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
                .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
            let mut w = std::io::BufWriter::new(f);
            let bar = if json {
                indicatif::ProgressBar::hidden()
            } else {
                indicatif::ProgressBar::new(0)
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "backup {bar:40} {bytes}/~{total_bytes} ({bytes_per_sec})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
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
        Command::Seal => {
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
        Command::Keys(KeysCommand::Retire { version }) => {
            let v = kek_version(&version)?;
            vault.retire_key(v).await?;
            if json {
                writeln!(out, "{}", serde_json::json!({"retired": v}))?;
            } else {
                writeln!(out, "KEK v{v} retired: its key is destroyed")?;
            }
        }
        Command::Keys(KeysCommand::Compromised { version }) => {
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
            if json {
                let v = serde_json::json!({
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
                print_table(&mut out, &["KEY", "VALUE"], &rows)?;
            }
        }
        Command::Consent {
            subject,
            grant,
            withdraw,
            policy_version,
        } => {
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
                    &mut out,
                    &["SUBJECT", "PURPOSES", "POLICY_VERSION"],
                    &[vec![subject, r.purposes.join(","), r.policy_version]],
                )?;
            }
        }
        Command::Principal(PrincipalCommand::Create { name, role, ttl }) => {
            let secs = parse_ttl(&ttl).ok_or_else(|| {
                Failure::Usage(format!(
                    "--ttl {ttl:?}: give seconds or a number with s, m, h or d"
                ))
            })?;
            let r = vault.create_principal(&name, &role, secs).await?;
            let token = Zeroizing::new(r.token);
            let p = r.principal.unwrap_or_default();
            if json && r.pending {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": p.id, "name": p.name, "role": p.role,
                        "pending": true, "approval_deadline": r.approval_deadline,
                        "token_part": token.as_str()})
                )?;
            } else if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": p.id, "name": p.name, "role": p.role,
                        "expires_at": p.expires_at, "token": token.as_str()})
                )?;
            } else if r.pending {
                writeln!(out, "id:           {}", p.id)?;
                writeln!(out, "name:         {}", p.name)?;
                writeln!(out, "role:         {}", p.role)?;
                writeln!(out, "state:        pending approval")?;
                writeln!(out, "approval_deadline:   {}", r.approval_deadline)?;
                writeln!(out, "token part 1: {}", token.as_str())?;
                eprintln!(
                    "vaultctl: {} may see personal data, so a second principal must approve: vaultctl principal approve {} --name {} --role {}",
                    p.role, p.id, p.name, p.role
                );
                eprintln!(
                    "vaultctl: hand part 1 to {} yourself; the approver hands over part 2; the token is part 1 followed by part 2",
                    p.name
                );
            } else {
                writeln!(out, "id:         {}", p.id)?;
                writeln!(out, "name:       {}", p.name)?;
                writeln!(out, "role:       {}", p.role)?;
                writeln!(out, "expires_at: {}", p.expires_at)?;
                writeln!(out, "token:      {}", token.as_str())?;
                eprintln!(
                    "vaultctl: the token is shown once; the vault keeps only a keyed hash of it"
                );
            }
        }
        Command::Principal(PrincipalCommand::Approve { id, name, role }) => {
            let r = vault.approve_grant(&id, &name, &role).await?;
            let part = Zeroizing::new(r.token_part);
            let p = r.principal.unwrap_or_default();
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": p.id, "name": p.name, "role": p.role,
                        "expires_at": p.expires_at, "requested_by": p.created_by,
                        "token_part": part.as_str()})
                )?;
            } else {
                writeln!(out, "id:           {}", p.id)?;
                writeln!(out, "name:         {}", p.name)?;
                writeln!(out, "role:         {}", p.role)?;
                writeln!(out, "requested_by: {}", p.created_by)?;
                writeln!(out, "expires_at:   {}", p.expires_at)?;
                writeln!(out, "token part 2: {}", part.as_str())?;
                eprintln!(
                    "vaultctl: hand part 2 to {} yourself; the token is the requester's part 1 followed at once by part 2",
                    p.name
                );
            }
        }
        Command::Principal(PrincipalCommand::Reject { id, reason }) => {
            let p = vault.reject_grant(&id, &reason).await?;
            print_principals(&mut out, json, &[p])?;
        }
        Command::Principal(PrincipalCommand::List) => {
            let ps = vault.list_principals().await?;
            print_principals(&mut out, json, &ps)?;
        }
        Command::Principal(PrincipalCommand::Revoke { id }) => {
            let p = vault.revoke_principal(&id).await?;
            print_principals(&mut out, json, &[p])?;
        }
        Command::Policy(PolicyCommand::Reload) => {
            let r = vault.reload_policy().await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"policies": r.policies, "files": r.files})
                )?;
            } else {
                writeln!(
                    out,
                    "reloaded: {} policies from {} files",
                    r.policies,
                    r.files.len()
                )?;
            }
        }
        Command::Policy(PolicyCommand::Explain {
            principal,
            role,
            field,
            purpose,
            grant,
            ttl,
            consented,
            restricted,
            ..
        }) => {
            let grant_ttl_seconds = explain_ttl(ttl.as_deref())?;
            let e = vault
                .explain(crate::proto::ExplainRequest {
                    principal: principal.unwrap_or_default(),
                    role: role.unwrap_or_default(),
                    field: field.unwrap_or_default(),
                    purpose: purpose.unwrap_or_default(),
                    consented,
                    restricted,
                    actions: Vec::new(),
                    grant_role: grant.unwrap_or_default(),
                    grant_ttl_seconds,
                })
                .await?;
            print_explained(&mut out, json, &e)?;
        }
        Command::Policy(PolicyCommand::Check { .. }) => {}
        Command::Audit(AuditCommand::Query {
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
        }) => {
            let query = crate::proto::QueryRequest {
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
                return follow_audit(&mut vault, query, interval_ms, json, &mut out).await;
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
                    &mut out,
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
        Command::Audit(AuditCommand::Export { after }) => {
            // Written as the chunks come: memory does not grow with the trail.
            let mut stream = vault.audit_export_stream(after).await?;
            let mut first = true;
            while let Some(chunk) = stream.message().await.map_err(ClientError::from)? {
                if first {
                    writeln!(
                        out,
                        "{}",
                        crate::audit::header_line(chunk.after_seq, &chunk.start_prev_hash)
                    )?;
                    first = false;
                }
                for e in &chunk.events {
                    writeln!(out, "{}", crate::audit::event_line(e))?;
                }
                if let Some(c) = &chunk.checkpoint {
                    writeln!(out, "{}", crate::audit::checkpoint_line(c))?;
                }
            }
        }
        Command::Audit(AuditCommand::Pubkey) => {
            let key = vault.audit_public_key().await?;
            writeln!(out, "{}", crate::audit::hex(&key))?;
        }
        Command::Audit(AuditCommand::Verify { .. }) => {
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
        Command::Whoami => {
            let w = vault.who_am_i().await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"name": w.name, "role": w.role, "auth": w.auth})
                )?;
            } else {
                print_table(
                    &mut out,
                    &["NAME", "ROLE", "AUTH"],
                    &[vec![w.name, w.role, w.auth]],
                )?;
            }
        }
        Command::Bench(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_of(args: &[&str]) -> Result<Target, Failure> {
        let mut all = vec!["vaultctl"];
        all.extend_from_slice(args);
        all.push("status");
        target(&Cli::try_parse_from(all).unwrap())
    }

    #[test]
    fn tls_options_with_an_http_address_are_a_usage_error() {
        for args in [
            &["--addr", "http://127.0.0.1:1", "--ca-cert", "/no/such.pem"][..],
            &["--addr", "HTTP://127.0.0.1:1", "--ca-cert", "/no/such.pem"][..],
            &[
                "--addr",
                "http://h:1",
                "--client-cert",
                "c.pem",
                "--client-key",
                "k.pem",
            ][..],
            &["--addr", "http://h:1", "--tls-domain", "vault.example"][..],
        ] {
            match target_of(args) {
                Err(Failure::Usage(m)) => assert!(m.contains("plaintext http://"), "{m}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        // Without a scheme, TLS options mean https; without them, http.
        assert!(matches!(
            target_of(&["--addr", "127.0.0.1:1", "--ca-cert", "/no/such.pem"]),
            Err(Failure::Usage(m)) if m.contains("/no/such.pem")
        ));
        assert!(
            target_of(&["--addr", "http://127.0.0.1:1"])
                .unwrap()
                .tls
                .is_none()
        );
        assert!(target_of(&[]).unwrap().tls.is_none());
        assert!(matches!(
            target_of(&["--addr", "https://h:1"]),
            Err(Failure::Usage(m)) if m.contains("needs --ca-cert")
        ));
        assert!(crate::is_plaintext_addr("http://h:1"));
        assert!(!crate::is_plaintext_addr("https://h:1"));
        assert!(!crate::is_plaintext_addr("h:1"));
    }
}
