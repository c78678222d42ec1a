//! Access decisions: the Cedar policies of `policies/` (a schema,
//! `vault.cedarschema`, and `*.cedar` files), evaluated per principal,
//! action, field and context, with a decision cache dropped on reload.
//!
//! Loading checks everything before anything is used: the Cedar schema, each
//! policy file (syntax, then types against the schema), that policy ids are
//! unique, and that every `Vault::Field` and `Vault::FieldClass` a policy
//! names exists in `fields.toml`. Every problem names its file and line. A
//! vault whose policies do not load does not start; a reload whose policies do
//! not load keeps the running ones.

mod cache;
pub mod explain;
mod load;

use load::Types;
pub use load::{PolicyError, PolicySource};

use crate::model::{Principal, Reveal};
use crate::schema::{FieldDef, Schema};
use cache::{DecisionCache, Key};
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityUid, Request, RestrictedExpression,
};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// An action the policies decide on. The names are the Cedar action ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Store a field's value.
    Tokenize,
    /// See a field's value in clear.
    RevealPlain,
    /// See a field's masked value.
    RevealMasked,
    /// See a field's partial value (its `partial_mask`, e.g. a card's BIN
    /// and last four): more than masked, less than plain.
    RevealPartial,
    /// Find tokens by exact value.
    Lookup,
    /// Correct a field's value.
    Update,
    /// Grant or withdraw a subject's consent.
    SetConsent,
    /// Link a travel companion to its account holder.
    LinkCompanion,
    /// Export a subject's data.
    Export,
    /// Erase a subject.
    Erase,
    /// Restrict or lift processing of a subject.
    Restrict,
    /// Set or release a legal hold.
    LegalHold,
    /// Query the audit trail.
    ReadAudit,
    /// Verify the audit trail.
    VerifyAudit,
    /// Export the audit trail.
    ExportAudit,
    /// Ask the vault's status.
    Status,
    /// Create, list and revoke bearer tokens.
    ManagePrincipals,
    /// Reload the policies.
    ReloadPolicy,
    /// Ask which policy decides a request.
    ExplainPolicy,
    /// Unseal.
    Unseal,
    /// Seal.
    Seal,
    /// Rotate keys.
    RotateKeys,
    /// Back up.
    Backup,
    /// Report on retention and run the sweeper.
    Lifecycle,
    /// Ask for a bearer token for a role (alone enough for a role that
    /// sees no personal data).
    RequestGrant,
    /// Approve another principal's request for a data role's token.
    ApproveGrant,
}

impl Action {
    /// The Cedar action id.
    pub fn name(self) -> &'static str {
        match self {
            Action::Tokenize => "tokenize",
            Action::RevealPlain => "reveal_plain",
            Action::RevealMasked => "reveal_masked",
            Action::RevealPartial => "reveal_partial",
            Action::Lookup => "lookup",
            Action::Update => "update",
            Action::SetConsent => "set_consent",
            Action::LinkCompanion => "link_companion",
            Action::Export => "export",
            Action::Erase => "erase",
            Action::Restrict => "restrict",
            Action::LegalHold => "legal_hold",
            Action::ReadAudit => "read_audit",
            Action::VerifyAudit => "verify_audit",
            Action::ExportAudit => "export_audit",
            Action::Status => "status",
            Action::ManagePrincipals => "manage_principals",
            Action::ReloadPolicy => "reload_policy",
            Action::ExplainPolicy => "explain_policy",
            Action::Unseal => "unseal",
            Action::Seal => "seal",
            Action::RotateKeys => "rotate_keys",
            Action::Backup => "backup",
            Action::Lifecycle => "lifecycle",
            Action::RequestGrant => "request_grant",
            Action::ApproveGrant => "approve_grant",
        }
    }

    /// The action called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.name() == name)
    }

    /// Every action.
    pub const ALL: [Action; 26] = [
        Action::Tokenize,
        Action::RevealPlain,
        Action::RevealMasked,
        Action::RevealPartial,
        Action::Lookup,
        Action::Update,
        Action::SetConsent,
        Action::LinkCompanion,
        Action::Export,
        Action::Erase,
        Action::Restrict,
        Action::LegalHold,
        Action::ReadAudit,
        Action::VerifyAudit,
        Action::ExportAudit,
        Action::Status,
        Action::ManagePrincipals,
        Action::ReloadPolicy,
        Action::ExplainPolicy,
        Action::Unseal,
        Action::Seal,
        Action::RotateKeys,
        Action::Backup,
        Action::Lifecycle,
        Action::RequestGrant,
        Action::ApproveGrant,
    ];

    /// The actions on a field, in the order `explain` reports them.
    pub const ON_FIELD: [Action; 6] = [
        Action::Tokenize,
        Action::RevealPlain,
        Action::RevealPartial,
        Action::RevealMasked,
        Action::Lookup,
        Action::Update,
    ];

    /// Whether the action's resource is a field (else a subject, the audit
    /// trail or the vault itself).
    pub fn on_field(self) -> bool {
        matches!(
            self,
            Action::Tokenize
                | Action::RevealPlain
                | Action::RevealMasked
                | Action::RevealPartial
                | Action::Lookup
                | Action::Update
        )
    }

    /// Whether the action acts on personal data: every field action and
    /// every subject action. A role that any permit names for one of these
    /// is a data role (see [`PolicyEngine::data_role`]).
    pub fn on_personal_data(self) -> bool {
        self.on_field()
            || matches!(
                self,
                Action::SetConsent
                    | Action::LinkCompanion
                    | Action::Export
                    | Action::Erase
                    | Action::Restrict
                    | Action::LegalHold
            )
    }

    /// Whether the action's resource is a role (a grant).
    pub fn on_role(self) -> bool {
        matches!(self, Action::RequestGrant | Action::ApproveGrant)
    }

    fn resource(self, types: &Types) -> EntityUid {
        match self {
            a if a.on_field() => types.uid(&types.field, ""),
            Action::SetConsent
            | Action::LinkCompanion
            | Action::Export
            | Action::Erase
            | Action::Restrict
            | Action::LegalHold => types.uid(&types.subject, "any"),
            Action::ReadAudit | Action::VerifyAudit | Action::ExportAudit => {
                types.uid(&types.audit_trail, "main")
            }
            _ => types.uid(&types.system, "vault"),
        }
    }
}

/// What the vault knows of one subject when it decides about its fields.
#[derive(Debug, Clone, Default)]
pub struct SubjectContext {
    /// The purposes the subject consented to, as a mask over
    /// [`Schema::purposes`] indexes.
    pub consented: u128,
    /// Whether processing is restricted (GDPR 18).
    pub restricted: bool,
    /// The privacy-policy version the data was collected under.
    pub policy_version: String,
}

impl SubjectContext {
    /// The context of a subject whose consented purposes are `purposes`
    /// (names; undeclared ones are ignored).
    pub fn new<'a>(
        schema: &Schema,
        purposes: impl IntoIterator<Item = &'a str>,
        restricted: bool,
        policy_version: &str,
    ) -> Self {
        let mut consented = 0u128;
        for p in purposes {
            if let Some(def) = schema.purpose(p) {
                consented |= 1u128 << def.index;
            }
        }
        Self {
            consented,
            restricted,
            policy_version: policy_version.to_owned(),
        }
    }
}

/// Whether a grant of a role to a name needs a second principal, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRole {
    /// Whether the role (for this name) may act on personal data.
    pub data: bool,
    /// The permits that make it so (`id (file:line)`).
    pub because: Vec<String>,
}

/// A grant being decided: the role asked for, whether it is a data role,
/// and the token's life.
#[derive(Debug, Clone, Copy)]
pub struct GrantAsk<'a> {
    /// The role granted.
    pub role: &'a str,
    /// Whether it is a data role ([`PolicyEngine::data_role`]).
    pub data_role: bool,
    /// The token's life, in seconds.
    pub ttl_seconds: u64,
}

/// The outcome of one explained decision.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The action asked.
    pub action: Action,
    /// Whether it is allowed.
    pub allowed: bool,
    /// The policies that decided it (`id (file:line)`); empty when nothing
    /// permitted it (default deny).
    pub policies: Vec<String>,
    /// Errors met while evaluating policies (such a policy is skipped).
    pub errors: Vec<String>,
}

/// How an explanation names the vault's rule that a token issued by one
/// principal never acts on personal data.
pub const SINGLE_GRANT_RULE: &str =
    "vault rule: a token issued by one principal never acts on personal data";

/// What a decision is about, beyond its principal and action.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// A field of a subject, for a purpose.
    Field(&'a FieldDef, &'a str, &'a SubjectContext),
    /// A grant of a role.
    Grant(GrantAsk<'a>),
    /// A subject as a whole, the audit trail or the vault.
    Whole,
}

/// One loaded, validated policy set with its entities and decision cache.
struct Loaded {
    schema: cedar_policy::Schema,
    policies: cedar_policy::PolicySet,
    /// Fields and their classes.
    entities: Entities,
    /// Where each policy id comes from: `file:line`.
    origin: HashMap<String, String>,
    cache: DecisionCache,
    /// Whole-action decisions evaluated (not answered from the cache).
    #[cfg(test)]
    whole_evaluations: std::sync::atomic::AtomicU64,
    /// Number of policies.
    count: usize,
    /// Names of the files loaded.
    files: Vec<String>,
}

/// The running policy: swapped whole on reload.
pub struct PolicyEngine {
    current: RwLock<Arc<Loaded>>,
    dir: Option<PathBuf>,
    fields: Arc<Schema>,
    authorizer: Authorizer,
    types: Types,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// One loaded policy set, held for the length of a request.
pub struct Snapshot<'a> {
    engine: &'a PolicyEngine,
    loaded: Arc<Loaded>,
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

impl Snapshot<'_> {
    /// What `principal` gets of `field` for `purpose`, for a subject in
    /// context `subject`: plain if `reveal_plain` is allowed, else partial
    /// if `reveal_partial` is, else masked if `reveal_masked` is, else denied.
    pub fn reveal(
        &self,
        principal: &Principal,
        field: &FieldDef,
        purpose: &str,
        subject: &SubjectContext,
    ) -> Reveal {
        let cur = &self.loaded;
        let key = Key::new(principal, None, field, purpose, subject);
        if let Some(r) = cur.cache.get_reveal(&key) {
            return r;
        }
        let ask = |a| {
            self.engine
                .evaluate(cur, principal, a, Some((field, purpose, subject)))
                .allowed
        };
        let r = if ask(Action::RevealPlain) {
            Reveal::Plain
        } else if ask(Action::RevealPartial) {
            Reveal::Partial
        } else if ask(Action::RevealMasked) {
            Reveal::Masked
        } else {
            Reveal::Denied
        };
        cur.cache.put_reveal(key, r);
        r
    }

    /// Whether `principal` may do the field action `action` on `field` for
    /// `purpose` ("" for tokenize) in context `subject`.
    pub fn allows_field(
        &self,
        principal: &Principal,
        action: Action,
        field: &FieldDef,
        purpose: &str,
        subject: &SubjectContext,
    ) -> bool {
        let cur = &self.loaded;
        let key = Key::new(principal, Some(action), field, purpose, subject);
        if let Some(r) = cur.cache.get_allowed(&key) {
            return r;
        }
        let r = self
            .engine
            .evaluate(cur, principal, action, Some((field, purpose, subject)))
            .allowed;
        cur.cache.put_allowed(key, r);
        r
    }
}

/// What a load or reload found.
#[derive(Debug, Clone)]
pub struct LoadSummary {
    /// Number of policies.
    pub policies: usize,
    /// The files read.
    pub files: Vec<String>,
}

impl PolicyEngine {
    /// Loads the policies of `dir` (or the built-in ones) against the field
    /// schema `fields`.
    pub fn load(dir: Option<PathBuf>, fields: Arc<Schema>) -> Result<Self, PolicyError> {
        let loaded = Self::compile(dir.as_deref(), &fields)?;
        Ok(Self {
            current: RwLock::new(Arc::new(loaded)),
            dir,
            fields,
            authorizer: Authorizer::new(),
            types: Types::new()?,
        })
    }

    fn compile(dir: Option<&std::path::Path>, fields: &Schema) -> Result<Loaded, PolicyError> {
        let source = match dir {
            Some(d) => PolicySource::read_dir(d)?,
            None => PolicySource::builtin(),
        };
        let checked = source.check(fields)?;
        Ok(Loaded {
            count: checked.origin.len(),
            schema: checked.schema,
            policies: checked.policies,
            entities: checked.entities,
            origin: checked.origin,
            cache: DecisionCache::new(),
            #[cfg(test)]
            whole_evaluations: std::sync::atomic::AtomicU64::new(0),
            files: source.file_names(),
        })
    }

    /// Reloads the policies from their directory. On any problem the running
    /// policies stay and the error says why. A successful reload drops every
    /// cached decision.
    pub fn reload(&self) -> Result<LoadSummary, PolicyError> {
        let loaded = Self::compile(self.dir.as_deref(), &self.fields)?;
        let summary = LoadSummary {
            policies: loaded.count,
            files: loaded.files.clone(),
        };
        match self.current.write() {
            Ok(mut cur) => *cur = Arc::new(loaded),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(loaded),
        }
        Ok(summary)
    }

    /// What is loaded now.
    pub fn summary(&self) -> LoadSummary {
        let cur = self.loaded();
        LoadSummary {
            policies: cur.count,
            files: cur.files.clone(),
        }
    }

    fn loaded(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(cur) => cur.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The field schema the policies were checked against.
    pub fn fields(&self) -> &Arc<Schema> {
        &self.fields
    }

    /// The policy set loaded now, to decide many fields of one request
    /// without going back to the lock for each.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            engine: self,
            loaded: self.loaded(),
        }
    }

    /// What `principal` gets of `field` for `purpose`, for a subject in
    /// context `subject`: see [`Snapshot::reveal`].
    pub fn reveal(
        &self,
        principal: &Principal,
        field: &FieldDef,
        purpose: &str,
        subject: &SubjectContext,
    ) -> Reveal {
        self.snapshot().reveal(principal, field, purpose, subject)
    }

    /// Whether `principal` may do the field action `action`: see
    /// [`Snapshot::allows_field`].
    pub fn allows_field(
        &self,
        principal: &Principal,
        action: Action,
        field: &FieldDef,
        purpose: &str,
        subject: &SubjectContext,
    ) -> bool {
        self.snapshot()
            .allows_field(principal, action, field, purpose, subject)
    }

    /// Whether `principal` may do the subject, audit or system action
    /// `action` (cached with the field decisions, per loaded policy set:
    /// it depends on the principal and the action alone).
    pub fn allows(&self, principal: &Principal, action: Action) -> bool {
        let cur = self.loaded();
        let key = Key::whole(principal, action);
        if let Some(r) = cur.cache.get_allowed(&key) {
            return r;
        }
        #[cfg(test)]
        cur.whole_evaluations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = self.evaluate(&cur, principal, action, None).allowed;
        cur.cache.put_allowed(key, r);
        r
    }

    /// The decision of the grant action `action` (`request_grant` or
    /// `approve_grant`) for `principal` on `grant`.
    pub fn explain_grant(
        &self,
        principal: &Principal,
        action: Action,
        grant: GrantAsk<'_>,
    ) -> Explanation {
        let cur = self.loaded();
        self.evaluate_on(&cur, principal, action, Target::Grant(grant))
    }

    /// Whether a token for `role` issued to `name` could act on personal
    /// data: some permit of the loaded policies that allows a field or
    /// subject action has a principal scope that the grantee would fall in.
    /// Worked out from the policies' scopes alone, ignoring their
    /// conditions, so it errs towards "data role" (a condition cannot make
    /// a permit safe to grant alone): a permit for `principal`, for
    /// `principal is Vault::Principal`, or `in` anything but another role
    /// counts for every role.
    pub fn data_role(&self, role: &str, name: &str) -> DataRole {
        use cedar_policy::{ActionConstraint, Effect, PrincipalConstraint};
        let cur = self.loaded();
        let t = &self.types;
        let role_uid = t.uid(&t.role, role);
        let principal_uid = t.uid(&t.principal, name);
        let data_action = |uid: &EntityUid| {
            uid.type_name() == &t.action
                && Action::parse(uid.id().unescaped()).is_none_or(Action::on_personal_data)
        };
        let mut because: Vec<String> = cur
            .policies
            .policies()
            .filter(|p| p.effect() == Effect::Permit)
            .filter(|p| match p.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(a) => data_action(&a),
                ActionConstraint::In(list) => list.iter().any(data_action),
            })
            .filter(|p| match p.principal_constraint() {
                PrincipalConstraint::Any | PrincipalConstraint::Is(_) => true,
                PrincipalConstraint::Eq(uid) => uid == principal_uid,
                PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid) => {
                    uid.type_name() != &t.role || uid == role_uid
                }
            })
            .map(|p| {
                let id = p.id().to_string();
                match cur.origin.get(&id) {
                    Some(at) => format!("{id} ({at})"),
                    None => id,
                }
            })
            .collect();
        because.sort();
        DataRole {
            data: !because.is_empty(),
            because,
        }
    }

    /// Explains each of the field `actions` (tokenize is asked with no
    /// purpose, the others with `purpose`) and the resulting reveal.
    pub fn explain_field(
        &self,
        principal: &Principal,
        field: &FieldDef,
        purpose: &str,
        subject: &SubjectContext,
        actions: &[Action],
    ) -> (Reveal, Vec<Explanation>) {
        let snapshot = self.snapshot();
        let explained = actions
            .iter()
            .map(|&a| {
                let p = if a == Action::Tokenize { "" } else { purpose };
                self.evaluate(&snapshot.loaded, principal, a, Some((field, p, subject)))
            })
            .collect();
        (
            snapshot.reveal(principal, field, purpose, subject),
            explained,
        )
    }

    /// Explains the decision of `action` for `principal` (on `field` for
    /// `purpose` in context `subject`, for field actions).
    pub fn explain(
        &self,
        principal: &Principal,
        action: Action,
        field: Option<(&FieldDef, &str, &SubjectContext)>,
    ) -> Explanation {
        let cur = self.loaded();
        self.evaluate(&cur, principal, action, field)
    }

    fn evaluate(
        &self,
        cur: &Loaded,
        principal: &Principal,
        action: Action,
        field: Option<(&FieldDef, &str, &SubjectContext)>,
    ) -> Explanation {
        let target = match field {
            Some((def, purpose, subject)) => Target::Field(def, purpose, subject),
            None => Target::Whole,
        };
        self.evaluate_on(cur, principal, action, target)
    }

    fn evaluate_on(
        &self,
        cur: &Loaded,
        principal: &Principal,
        action: Action,
        target: Target<'_>,
    ) -> Explanation {
        if action.on_personal_data() && !principal.data_capable {
            // The vault's own rule, before any policy: see Principal::data_capable.
            return Explanation {
                action,
                allowed: false,
                policies: vec![SINGLE_GRANT_RULE.to_owned()],
                errors: Vec::new(),
            };
        }
        let denied = |e: String| Explanation {
            action,
            allowed: false,
            policies: Vec::new(),
            errors: vec![e],
        };
        let t = &self.types;
        let principal_uid = t.uid(&t.principal, &principal.name);
        let role_uid = t.uid(&t.role, &principal.role);
        let attrs = HashMap::from([(
            "auth".to_owned(),
            RestrictedExpression::new_string(principal.method.name().to_owned()),
        )]);
        let entity = match Entity::new(
            principal_uid.clone(),
            attrs,
            HashSet::from([role_uid.clone()]),
        ) {
            Ok(e) => e,
            Err(e) => return denied(format!("principal entity: {e}")),
        };
        let mut extra = vec![
            entity,
            Entity::new_no_attrs(role_uid.clone(), HashSet::new()),
        ];
        if let Target::Grant(g) = target {
            let granted = t.uid(&t.role, g.role);
            if granted != role_uid {
                extra.push(Entity::new_no_attrs(granted, HashSet::new()));
            }
        }
        let entities = match cur.entities.clone().add_entities(extra, Some(&cur.schema)) {
            Ok(e) => e,
            Err(e) => return denied(format!("entities: {e}")),
        };
        let (resource, context) = match (action.on_field(), target) {
            (true, Target::Field(def, purpose, subject)) => {
                let needs_consent = self
                    .fields
                    .purpose(purpose)
                    .is_some_and(|p| p.needs_consent());
                let consented = self
                    .fields
                    .purposes()
                    .filter(|p| subject.consented & (1u128 << p.index) != 0)
                    .map(|p| RestrictedExpression::new_string(p.name.clone()))
                    .collect::<Vec<_>>();
                let ctx = Context::from_pairs([
                    (
                        "purpose".to_owned(),
                        RestrictedExpression::new_string(purpose.to_owned()),
                    ),
                    (
                        "purpose_needs_consent".to_owned(),
                        RestrictedExpression::new_bool(needs_consent),
                    ),
                    (
                        "consented".to_owned(),
                        RestrictedExpression::new_set(consented),
                    ),
                    (
                        "restricted".to_owned(),
                        RestrictedExpression::new_bool(subject.restricted),
                    ),
                    (
                        "policy_version".to_owned(),
                        RestrictedExpression::new_string(subject.policy_version.clone()),
                    ),
                ]);
                match ctx {
                    Ok(c) => (t.uid(&t.field, &def.name), c),
                    Err(e) => return denied(format!("context: {e}")),
                }
            }
            (true, _) => return denied("a field action needs a field".into()),
            (false, Target::Grant(g)) if action.on_role() => {
                let ctx = Context::from_pairs([
                    (
                        "data_role".to_owned(),
                        RestrictedExpression::new_bool(g.data_role),
                    ),
                    (
                        "ttl_seconds".to_owned(),
                        RestrictedExpression::new_long(
                            i64::try_from(g.ttl_seconds).unwrap_or(i64::MAX),
                        ),
                    ),
                ]);
                match ctx {
                    Ok(c) => (t.uid(&t.role, g.role), c),
                    Err(e) => return denied(format!("context: {e}")),
                }
            }
            (false, _) if action.on_role() => {
                return denied("a grant action needs a role".into());
            }
            (false, _) => (action.resource(t), Context::empty()),
        };
        let request = match Request::new(
            principal_uid,
            t.uid(&t.action, action.name()),
            resource,
            context,
            Some(&cur.schema),
        ) {
            Ok(r) => r,
            Err(e) => return denied(format!("request: {e}")),
        };
        let response = self
            .authorizer
            .is_authorized(&request, &cur.policies, &entities);
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| {
                let id = id.to_string();
                match cur.origin.get(&id) {
                    Some(at) => format!("{id} ({at})"),
                    None => id,
                }
            })
            .collect();
        policies.sort();
        Explanation {
            action,
            allowed: response.decision() == Decision::Allow,
            policies,
            errors: response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
