//! Reading and checking policy files: every problem with its file and line.

use crate::schema::Schema;
use cedar_policy::{
    Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet,
    RestrictedExpression, ValidationMode, Validator,
};
use miette::Diagnostic;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::Path;

/// The name of the Cedar schema file in a policy directory.
pub const SCHEMA_FILE: &str = "vault.cedarschema";

/// The built-in policies (`policies/` of the source tree), so that `vaultd`
/// runs from any directory.
const BUILTIN: [(&str, &str); 7] = [
    (
        "vault.cedarschema",
        include_str!("../../../policies/vault.cedarschema"),
    ),
    ("base.cedar", include_str!("../../../policies/base.cedar")),
    (
        "booking.cedar",
        include_str!("../../../policies/booking.cedar"),
    ),
    (
        "governance.cedar",
        include_str!("../../../policies/governance.cedar"),
    ),
    (
        "marketing.cedar",
        include_str!("../../../policies/marketing.cedar"),
    ),
    (
        "payments.cedar",
        include_str!("../../../policies/payments.cedar"),
    ),
    ("staff.cedar", include_str!("../../../policies/staff.cedar")),
];

/// Every problem found in the policies, each as `FILE:LINE:COLUMN: message`
/// (or `FILE: message` where no line applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid access policy:")?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

impl PolicyError {
    fn one(p: String) -> Self {
        Self { problems: vec![p] }
    }
}

/// One file's name and text.
#[derive(Debug, Clone)]
struct SourceFile {
    label: String,
    text: String,
}

impl SourceFile {
    /// `label:line:column` of byte `offset`.
    fn at(&self, offset: usize) -> String {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{column}", self.label)
    }

    /// One problem line for a diagnostic: located at its first label.
    fn problem(&self, d: &dyn Diagnostic, message: &str) -> String {
        let at = d
            .labels()
            .and_then(|mut l| l.next())
            .map_or_else(|| self.label.clone(), |l| self.at(l.offset()));
        let mut line = format!("{at}: {}", message.trim());
        if let Some(help) = d.help() {
            line.push_str(&format!(" ({help})"));
        }
        line
    }
}

/// The schema and policy files of a policy directory.
#[derive(Debug, Clone)]
pub struct PolicySource {
    schema: SourceFile,
    policies: Vec<SourceFile>,
}

/// Entity type names of the vault's Cedar schema.
#[derive(Debug, Clone)]
pub(super) struct Types {
    pub principal: EntityTypeName,
    pub role: EntityTypeName,
    pub field: EntityTypeName,
    pub field_class: EntityTypeName,
    pub subject: EntityTypeName,
    pub system: EntityTypeName,
    pub audit_trail: EntityTypeName,
    pub action: EntityTypeName,
}

impl Types {
    pub(super) fn new() -> Result<Self, PolicyError> {
        let t = |name: &str| {
            format!("Vault::{name}")
                .parse::<EntityTypeName>()
                .map_err(|e| PolicyError::one(format!("entity type {name}: {e}")))
        };
        Ok(Self {
            principal: t("Principal")?,
            role: t("Role")?,
            field: t("Field")?,
            field_class: t("FieldClass")?,
            subject: t("Subject")?,
            system: t("System")?,
            audit_trail: t("AuditTrail")?,
            action: t("Action")?,
        })
    }

    pub(super) fn uid(&self, ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }
}

/// A checked policy set.
pub(super) struct Checked {
    pub schema: cedar_policy::Schema,
    pub policies: PolicySet,
    pub entities: Entities,
    /// `file:line` of each policy id.
    pub origin: HashMap<String, String>,
}

impl PolicySource {
    /// The built-in policies.
    pub fn builtin() -> Self {
        let file = |(name, text): (&str, &str)| SourceFile {
            label: format!("<built-in policies/{name}>"),
            text: text.to_owned(),
        };
        let [schema, policies @ ..] = BUILTIN;
        Self {
            schema: file(schema),
            policies: policies.into_iter().map(file).collect(),
        }
    }

    /// Reads `dir/vault.cedarschema` and every `dir/*.cedar`, in name order.
    pub fn read_dir(dir: &Path) -> Result<Self, PolicyError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map(|text| SourceFile {
                    label: path.display().to_string(),
                    text,
                })
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))
        };
        let mut problems = Vec::new();
        let schema = read(&dir.join(SCHEMA_FILE))
            .map_err(|p| problems.push(p))
            .ok();
        let mut names = Vec::new();
        match std::fs::read_dir(dir) {
            Err(e) => problems.push(format!("{}: cannot list: {e}", dir.display())),
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|x| x == "cedar") && path.is_file() {
                        names.push(path);
                    }
                }
            }
        }
        names.sort();
        if names.is_empty() && problems.is_empty() {
            problems.push(format!("{}: no *.cedar policy files", dir.display()));
        }
        let mut policies = Vec::new();
        for path in names {
            match read(&path) {
                Ok(f) => policies.push(f),
                Err(p) => problems.push(p),
            }
        }
        match schema {
            Some(schema) if problems.is_empty() => Ok(Self { schema, policies }),
            _ => Err(PolicyError { problems }),
        }
    }

    /// The files' names.
    pub fn file_names(&self) -> Vec<String> {
        std::iter::once(&self.schema)
            .chain(&self.policies)
            .map(|f| f.label.clone())
            .collect()
    }

    /// Checks the files against each other and the field schema `fields`.
    pub(super) fn check(&self, fields: &Schema) -> Result<Checked, PolicyError> {
        let types = Types::new()?;
        let schema = match cedar_policy::Schema::from_cedarschema_str(&self.schema.text) {
            Ok((s, _warnings)) => s,
            Err(e) => {
                return Err(PolicyError::one(self.schema.problem(&e, &e.to_string())));
            }
        };
        let mut problems = Vec::new();
        let mut set = PolicySet::new();
        let mut origin = HashMap::new();
        // Which file each policy came from, for the validator's errors.
        let mut file_of: HashMap<String, usize> = HashMap::new();
        for (fi, file) in self.policies.iter().enumerate() {
            let parsed = match file.text.parse::<PolicySet>() {
                Ok(p) => p,
                Err(errs) => {
                    for e in errs.iter() {
                        problems.push(file.problem(e, &e.to_string()));
                    }
                    continue;
                }
            };
            let mut search_from = 0;
            for (n, policy) in parsed.policies().enumerate() {
                let text = policy.to_string();
                let offset = file
                    .text
                    .get(search_from..)
                    .and_then(|rest| rest.find(&text));
                let at = match offset {
                    Some(o) => {
                        search_from += o + text.len();
                        file.at(search_from - text.len())
                    }
                    None => file.label.clone(),
                };
                let id = match policy.annotation("id") {
                    Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
                    _ => format!("{}#{n}", file_stem(&file.label)),
                };
                if let Some(first) = origin.get(&id) {
                    problems.push(format!("{at}: policy id {id:?} is already used at {first}"));
                    continue;
                }
                for literal in policy.entity_literals() {
                    let name = literal.id().unescaped();
                    let ty = literal.type_name();
                    if *ty == types.field && fields.field(name).is_none() {
                        problems.push(format!(
                            "{at}: policy {id} names field {name:?}, which fields.toml does not declare"
                        ));
                    } else if *ty == types.field_class && fields.class(name).is_none() {
                        problems.push(format!(
                            "{at}: policy {id} names field class {name:?}, which fields.toml does not declare"
                        ));
                    }
                }
                let renamed = policy.new_id(PolicyId::new(&id));
                if let Err(e) = set.add(renamed) {
                    problems.push(format!("{at}: {e}"));
                    continue;
                }
                origin.insert(id.clone(), at);
                file_of.insert(id, fi);
            }
        }
        if !problems.is_empty() {
            return Err(PolicyError { problems });
        }
        let validation = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        for e in validation.validation_errors() {
            let id = e.policy_id().to_string();
            match file_of.get(&id).and_then(|i| self.policies.get(*i)) {
                Some(file) => problems.push(file.problem(e, &format!("policy {id}: {e}"))),
                None => problems.push(format!("policy {id}: {e}")),
            }
        }
        let entities = match field_entities(fields, &types, &schema) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!(
                    "{}: the fields of fields.toml do not fit the schema: {e}",
                    self.schema.label
                ));
                Entities::empty()
            }
        };
        if problems.is_empty() {
            Ok(Checked {
                schema,
                policies: set,
                entities,
                origin,
            })
        } else {
            Err(PolicyError { problems })
        }
    }
}

fn file_stem(label: &str) -> &str {
    let name = label.rsplit('/').next().unwrap_or(label);
    let name = name.trim_end_matches('>');
    name.strip_suffix(".cedar").unwrap_or(name)
}

/// One `Vault::Field` per field (in its `Vault::FieldClass`), and the classes.
fn field_entities(
    fields: &Schema,
    types: &Types,
    schema: &cedar_policy::Schema,
) -> Result<Entities, String> {
    let mut entities = Vec::new();
    let mut classes = BTreeSet::new();
    for f in fields.fields() {
        let class = types.uid(&types.field_class, &f.class);
        classes.insert(f.class.clone());
        let attrs = HashMap::from([
            (
                "class".to_owned(),
                RestrictedExpression::new_string(f.class.clone()),
            ),
            (
                "purposes".to_owned(),
                RestrictedExpression::new_set(
                    f.purposes
                        .iter()
                        .map(|p| RestrictedExpression::new_string(p.clone())),
                ),
            ),
            (
                "lookup".to_owned(),
                RestrictedExpression::new_bool(f.lookup),
            ),
        ]);
        let e = Entity::new(
            types.uid(&types.field, &f.name),
            attrs,
            HashSet::from([class]),
        )
        .map_err(|e| e.to_string())?;
        entities.push(e);
    }
    for c in classes {
        entities.push(Entity::new_no_attrs(
            types.uid(&types.field_class, &c),
            HashSet::new(),
        ));
    }
    Entities::from_entities(entities, Some(schema)).map_err(|e| e.to_string())
}
