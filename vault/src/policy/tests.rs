use super::*;
use crate::model::{AuthMethod, Reveal};

fn fields() -> Arc<Schema> {
    Arc::new(Schema::default_schema(4096).unwrap())
}

fn who(role: &str) -> Principal {
    Principal {
        name: Arc::from(format!("{role}-1").as_str()),
        role: Arc::from(role),
        method: AuthMethod::Bearer,
        credential_id: None,
        data_capable: true,
    }
}

fn ctx(s: &Schema, consented: &[&str]) -> SubjectContext {
    SubjectContext::new(s, consented.iter().copied(), false, "2024-01")
}

/// Copies the built-in policies into a directory, with `extra` files.
fn policy_dir(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".cedar") || name.ends_with(".cedarschema") {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[test]
fn the_builtin_policies_load_and_match_the_files() {
    let f = fields();
    let p = PolicyEngine::load(None, f.clone()).unwrap();
    let from_dir = PolicyEngine::load(Some(policy_dir(&[]).path().to_owned()), f).unwrap();
    assert!(p.summary().policies >= 15);
    assert_eq!(p.summary().policies, from_dir.summary().policies);
}

#[test]
fn reveal_is_plain_then_masked_then_denied() {
    let f = fields();
    let p = PolicyEngine::load(None, f.clone()).unwrap();
    let c = ctx(&f, &[]);
    let email = f.field("email").unwrap();
    let card = f.field("card_number").unwrap();
    let clerk = who("billing_clerk");
    assert_eq!(p.reveal(&clerk, email, "billing", &c), Reveal::Plain);
    assert_eq!(p.reveal(&clerk, card, "billing", &c), Reveal::Masked);
    assert_eq!(
        p.reveal(&clerk, email, "customer_support", &c),
        Reveal::Denied
    );
    for role in ["auditor", "operator", "privacy_officer", "intern"] {
        for field in f.fields() {
            for purpose in f.purposes() {
                assert_eq!(
                    p.reveal(&who(role), field, &purpose.name, &c),
                    Reveal::Denied,
                    "{role} {} {}",
                    field.name,
                    purpose.name
                );
            }
        }
    }
}

#[test]
fn consent_and_restriction_are_enforced() {
    let f = fields();
    let p = PolicyEngine::load(None, f.clone()).unwrap();
    let email = f.field("email").unwrap();
    let mailer = who("marketing_mailer");
    let consented = ctx(&f, &["marketing_email"]);
    assert_eq!(
        p.reveal(&mailer, email, "marketing_email", &consented),
        Reveal::Plain
    );
    assert_eq!(
        p.reveal(&mailer, email, "marketing_email", &ctx(&f, &["booking"])),
        Reveal::Denied
    );
    let mut restricted = ctx(&f, &[]);
    restricted.restricted = true;
    let booking = who("booking_service");
    assert_eq!(
        p.reveal(&booking, email, "itinerary", &ctx(&f, &[])),
        Reveal::Plain
    );
    assert_eq!(
        p.reveal(&booking, email, "itinerary", &restricted),
        Reveal::Denied
    );
}

#[test]
fn explain_names_the_deciding_policy_and_its_place() {
    let f = fields();
    let p = PolicyEngine::load(None, f.clone()).unwrap();
    let email = f.field("email").unwrap();
    let c = ctx(&f, &[]);
    let e = p.explain(
        &who("billing_clerk"),
        Action::RevealPlain,
        Some((email, "billing", &c)),
    );
    assert!(e.allowed);
    assert_eq!(e.policies.len(), 1, "{:?}", e.policies);
    assert!(
        e.policies[0].starts_with("billing_clerk_billing (<built-in policies/staff.cedar>:"),
        "{:?}",
        e.policies
    );
    let e = p.explain(
        &who("marketing_mailer"),
        Action::RevealPlain,
        Some((email, "marketing_email", &c)),
    );
    assert!(!e.allowed);
    assert!(
        e.policies[0].starts_with("consent_required"),
        "{:?}",
        e.policies
    );
    let e = p.explain(
        &who("auditor"),
        Action::RevealPlain,
        Some((email, "billing", &c)),
    );
    assert!(!e.allowed && e.policies.is_empty(), "default deny");
    assert!(p.allows(&who("operator"), Action::ManagePrincipals));
    assert!(!p.allows(&who("billing_clerk"), Action::ManagePrincipals));
    assert!(p.allows(&who("intern"), Action::Status));
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let dir = policy_dir(&[(
        "zz_broken.cedar",
        "// a comment\npermit (principal, action, resource)\nwhen { context.purpose == };\n",
    )]);
    let err = PolicyEngine::load(Some(dir.path().to_owned()), fields()).unwrap_err();
    let all = err.to_string();
    assert!(all.contains("zz_broken.cedar:3:"), "{all}");
}

#[test]
fn type_errors_name_file_and_line() {
    let dir = policy_dir(&[(
        "zz_typo.cedar",
        "\n\n@id(\"typo\")\npermit (principal, action == Vault::Action::\"reveal_plain\", resource)\nwhen { context.purpse == \"billing\" };\n",
    )]);
    let err = PolicyEngine::load(Some(dir.path().to_owned()), fields()).unwrap_err();
    let all = err.to_string();
    assert!(all.contains("zz_typo.cedar:5:"), "{all}");
    assert!(all.contains("policy typo"), "{all}");
}

#[test]
fn unknown_fields_classes_and_duplicate_ids_are_errors() {
    let dir = policy_dir(&[(
        "zz_names.cedar",
        "@id(\"a\")\npermit (principal, action, resource == Vault::Field::\"emial\");\n\
         @id(\"b\")\npermit (principal, action, resource in Vault::FieldClass::\"cards\");\n\
         @id(\"a\")\npermit (principal, action, resource);\n",
    )]);
    let err = PolicyEngine::load(Some(dir.path().to_owned()), fields()).unwrap_err();
    let all = err.to_string();
    assert!(
        all.contains("zz_names.cedar:1:1: policy a names field \"emial\""),
        "{all}"
    );
    assert!(
        all.contains("zz_names.cedar:3:1: policy b names field class \"cards\""),
        "{all}"
    );
    assert!(
        all.contains("zz_names.cedar:5:1: policy id \"a\" is already used"),
        "{all}"
    );
}

#[test]
fn a_bad_schema_file_is_reported_with_its_line() {
    let dir = policy_dir(&[("vault.cedarschema", "namespace Vault {\n  entity Role\n}\n")]);
    let err = PolicyEngine::load(Some(dir.path().to_owned()), fields()).unwrap_err();
    assert!(err.to_string().contains("vault.cedarschema:"), "{err}");
}

#[test]
fn a_bad_reload_keeps_the_running_policy_and_a_good_one_drops_the_cache() {
    let f = fields();
    let dir = policy_dir(&[]);
    let p = PolicyEngine::load(Some(dir.path().to_owned()), f.clone()).unwrap();
    let c = ctx(&f, &[]);
    let email = f.field("email").unwrap();
    let intern = who("intern");
    assert_eq!(p.reveal(&intern, email, "billing", &c), Reveal::Denied);
    assert!(p.loaded().cache.len() > 0);
    std::fs::write(
        dir.path().join("zz.cedar"),
        "permit (principal, action, resource",
    )
    .unwrap();
    assert!(p.reload().is_err());
    assert_eq!(p.reveal(&intern, email, "billing", &c), Reveal::Denied);
    std::fs::write(
        dir.path().join("zz.cedar"),
        "permit (principal in Vault::Role::\"intern\", action == Vault::Action::\"reveal_masked\", resource);",
    )
    .unwrap();
    p.reload().unwrap();
    assert_eq!(p.loaded().cache.len(), 0, "a reload starts a fresh cache");
    assert_eq!(p.reveal(&intern, email, "billing", &c), Reveal::Masked);
}

/// A subject, audit or system decision is cached per principal and action
/// (it depends on nothing else), like the field decisions: asked again it
/// is not evaluated again, another principal or action has its own entry,
/// and a reload drops them.
#[test]
fn whole_action_decisions_are_cached_per_principal_and_action() {
    let f = fields();
    let dir = policy_dir(&[]);
    let p = PolicyEngine::load(Some(dir.path().to_owned()), f).unwrap();
    let (operator, clerk) = (who("operator"), who("billing_clerk"));
    let evaluated = |p: &PolicyEngine| {
        p.loaded()
            .whole_evaluations
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(p.allows(&operator, Action::ManagePrincipals));
    assert_eq!((p.loaded().cache.len(), evaluated(&p)), (1, 1));
    assert!(p.allows(&operator, Action::ManagePrincipals));
    assert_eq!(evaluated(&p), 1, "answered from the cache");
    assert!(!p.allows(&clerk, Action::ManagePrincipals));
    assert!(!p.allows(&operator, Action::Erase));
    assert_eq!((p.loaded().cache.len(), evaluated(&p)), (3, 3));
    assert!(
        !p.allows(&clerk, Action::ManagePrincipals),
        "a denial is cached too"
    );
    assert_eq!(evaluated(&p), 3, "the denial answered from the cache");
    p.reload().unwrap();
    assert_eq!((p.loaded().cache.len(), evaluated(&p)), (0, 0));
    assert!(p.allows(&operator, Action::ManagePrincipals));
    assert_eq!(evaluated(&p), 1, "evaluated again after the reload");
}
