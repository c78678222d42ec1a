//! `vaultctl principal`: bearer tokens and the grants of data roles
//! (operators, approvers).

use crate::Failure;
use crate::input::parse_ttl;
use crate::output::print_table;
use clap::Subcommand;
use std::io::Write;
use vault_client::VaultClient;
use zeroize::Zeroizing;

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

/// Runs a `principal` command.
pub async fn run(
    command: PrincipalCommand,
    vault: &mut VaultClient,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        PrincipalCommand::Create { name, role, ttl } => {
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
        PrincipalCommand::Approve { id, name, role } => {
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
        PrincipalCommand::Reject { id, reason } => {
            let p = vault.reject_grant(&id, &reason).await?;
            print_principals(out, json, &[p])?;
        }
        PrincipalCommand::List => {
            let ps = vault.list_principals().await?;
            print_principals(out, json, &ps)?;
        }
        PrincipalCommand::Revoke { id } => {
            let p = vault.revoke_principal(&id).await?;
            print_principals(out, json, &[p])?;
        }
    }
    Ok(())
}

fn print_principals(
    out: &mut impl Write,
    json: bool,
    ps: &[vault_client::proto::PrincipalInfo],
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
