//! `vaultctl policy`: check policy files, explain decisions (asking the
//! vault, or offline from a policy directory) and reload the vault's policy.
//!
//! The offline commands (`check`, `explain --dir`) link the vault's policy
//! layer and need the `offline-policy` feature; without it they say so.

use crate::Failure;
use crate::input::parse_ttl;
use crate::output::{disclosure_name, print_table};
use clap::Subcommand;
use std::io::Write;
use vault_client::VaultClient;

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

fn decision_json(d: &vault_client::proto::ExplainedDecision) -> serde_json::Value {
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
fn decision_why(d: &vault_client::proto::ExplainedDecision) -> String {
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
    e: &vault_client::proto::ExplainResponse,
    g: &vault_client::proto::GrantExplained,
) -> std::io::Result<()> {
    let none = vault_client::proto::ExplainedDecision::default();
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
    e: &vault_client::proto::ExplainResponse,
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
    decisions: impl IntoIterator<Item = &'a vault_client::proto::ExplainedDecision>,
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

/// Runs the `policy` commands that need no vault (`check`, `explain
/// --dir`); `None` if `command` needs one.
pub fn run_offline(
    command: &PolicyCommand,
    json: bool,
    out: &mut impl Write,
) -> Option<Result<(), Failure>> {
    match command {
        PolicyCommand::Check { dir, schema } => {
            Some(offline::check(dir, schema.as_deref(), json, out))
        }
        PolicyCommand::Explain { dir: Some(dir), .. } => {
            Some(offline::explain(command, dir, json, out))
        }
        _ => None,
    }
}

/// The offline commands, deciding from policy files with the vault's own
/// policy layer (`vault::policy`, never its API).
#[cfg(feature = "offline-policy")]
mod offline {
    use super::{Failure, PolicyCommand, explain_ttl, print_explained};
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use vault::policy::explain::{
        DEFAULT_EXPLAINED_TTL_SECS, explain_grant_response, explain_response,
    };
    use vault::policy::{Action, PolicyEngine, SubjectContext};

    fn load(dir: &Path, schema: Option<&Path>) -> Result<PolicyEngine, Failure> {
        let schema_path = schema.map_or_else(|| dir.join("fields.toml"), Path::to_path_buf);
        let fields = vault::schema::Schema::load(&schema_path, 1 << 20)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        PolicyEngine::load(Some(PathBuf::from(dir)), Arc::new(fields))
            .map_err(|e| Failure::Usage(e.to_string()))
    }

    fn check_role(role: &str) -> Result<(), Failure> {
        vault::auth::credentials::check_role(role).map_err(|e| Failure::Usage(e.into()))
    }

    /// Any principal in `role`, as the vault's Explain RPC takes a role.
    fn any_in(role: &str) -> vault::model::Principal {
        vault::model::Principal {
            name: Arc::from("(any principal)"),
            role: Arc::from(role),
            method: vault::model::AuthMethod::Bearer,
            credential_id: None,
            data_capable: true,
        }
    }

    /// `vaultctl policy check`: the policies of `dir` load, or each problem.
    pub(super) fn check(
        dir: &Path,
        schema: Option<&Path>,
        json: bool,
        out: &mut impl Write,
    ) -> Result<(), Failure> {
        let policy = load(dir, schema)?;
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
    }

    /// `vaultctl policy explain --dir`: what the policies of `dir` decide
    /// for any principal in `--role`.
    pub(super) fn explain(
        command: &PolicyCommand,
        dir: &Path,
        json: bool,
        out: &mut impl Write,
    ) -> Result<(), Failure> {
        let PolicyCommand::Explain {
            role,
            field,
            purpose,
            grant,
            ttl,
            consented,
            restricted,
            schema,
            ..
        } = command
        else {
            return Ok(());
        };
        let role = role
            .as_deref()
            .ok_or_else(|| Failure::Usage("offline explain (--dir) needs --role".into()))?;
        let policy = load(dir, schema.as_deref())?;
        let e = match (grant, field, purpose) {
            (Some(granted), _, _) => {
                let ttl = match explain_ttl(ttl.as_deref())? {
                    0 => DEFAULT_EXPLAINED_TTL_SECS,
                    t => t,
                };
                check_role(role)?;
                check_role(granted)?;
                explain_grant_response(&policy, &any_in(role), granted, ttl)
            }
            (None, Some(field), Some(purpose)) => {
                let fields = policy.fields().clone();
                let def = fields
                    .field(field)
                    .ok_or_else(|| Failure::Usage(format!("unknown field {field:?}")))?;
                check_role(role)?;
                let ctx = SubjectContext::new(
                    &fields,
                    consented.iter().map(String::as_str),
                    *restricted,
                    "",
                );
                explain_response(
                    &policy,
                    &any_in(role),
                    def,
                    purpose,
                    &ctx,
                    &Action::ON_FIELD,
                )
            }
            _ => {
                return Err(Failure::Usage(
                    "give --field and --purpose, or --grant".into(),
                ));
            }
        };
        print_explained(out, json, &e)?;
        Ok(())
    }
}

/// Without the `offline-policy` feature, the offline commands say so.
#[cfg(not(feature = "offline-policy"))]
mod offline {
    use super::{Failure, PolicyCommand};
    use std::io::Write;
    use std::path::Path;

    fn without() -> Failure {
        Failure::Usage(
            "this vaultctl was built without the offline-policy feature: `policy check` and \
             `policy explain --dir` need it (build with --features vault-client/offline-policy)"
                .into(),
        )
    }

    pub(super) fn check(
        _dir: &Path,
        _schema: Option<&Path>,
        _json: bool,
        _out: &mut impl Write,
    ) -> Result<(), Failure> {
        Err(without())
    }

    pub(super) fn explain(
        _command: &PolicyCommand,
        _dir: &Path,
        _json: bool,
        _out: &mut impl Write,
    ) -> Result<(), Failure> {
        Err(without())
    }
}

/// Runs a `policy` command.
pub async fn run(
    command: PolicyCommand,
    vault: &mut VaultClient,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match command {
        PolicyCommand::Reload => {
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
        PolicyCommand::Explain {
            principal,
            role,
            field,
            purpose,
            grant,
            ttl,
            consented,
            restricted,
            ..
        } => {
            let grant_ttl_seconds = explain_ttl(ttl.as_deref())?;
            let e = vault
                .explain(vault_client::proto::ExplainRequest {
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
            print_explained(out, json, &e)?;
        }
        // Offline: `run_offline` ran it.
        PolicyCommand::Check { .. } => {}
    }
    Ok(())
}
