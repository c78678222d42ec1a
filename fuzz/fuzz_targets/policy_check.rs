//! Cedar policy source checking (`vault::policy`, its `load` module):
//! `vaultd` start, `PolicyService.Reload` and `vaultctl policy check`, on
//! the files of a policy directory.
//!
//! The first byte picks what the rest is: even, one policy file
//! (`fuzz.cedar`) beside the shipped Cedar schema; odd, the Cedar schema
//! (`vault.cedarschema`) beside the shipped policies. Written to a
//! temporary directory and loaded against the built-in `fields.toml`.
//!
//! Properties: loading never panics and says what is wrong when it
//! refuses; a set that loads can be reloaded to the same count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use vault::policy::PolicyEngine;
use vault::schema::Schema;

const SCHEMA: &str = include_str!("../../policies/vault.cedarschema");
const POLICIES: [(&str, &str); 6] = [
    ("base.cedar", include_str!("../../policies/base.cedar")),
    (
        "booking.cedar",
        include_str!("../../policies/booking.cedar"),
    ),
    (
        "governance.cedar",
        include_str!("../../policies/governance.cedar"),
    ),
    (
        "marketing.cedar",
        include_str!("../../policies/marketing.cedar"),
    ),
    (
        "payments.cedar",
        include_str!("../../policies/payments.cedar"),
    ),
    ("staff.cedar", include_str!("../../policies/staff.cedar")),
];

struct Dirs {
    fields: Arc<Schema>,
    /// The shipped schema, and one fuzzed policy file.
    policy: tempfile::TempDir,
    /// The shipped policies, and a fuzzed schema.
    schema: tempfile::TempDir,
}

fn dirs() -> &'static Dirs {
    static DIRS: OnceLock<Dirs> = OnceLock::new();
    DIRS.get_or_init(|| {
        let policy = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(policy.path().join("vault.cedarschema"), SCHEMA).expect("writing");
        let schema = tempfile::tempdir().expect("a temporary directory");
        for (name, text) in POLICIES {
            std::fs::write(schema.path().join(name), text).expect("writing");
        }
        Dirs {
            fields: Arc::new(Schema::default_schema(4096).expect("the built-in schema loads")),
            policy,
            schema,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let d = dirs();
    let dir = if mode & 1 == 0 {
        std::fs::write(d.policy.path().join("fuzz.cedar"), text).expect("writing");
        d.policy.path()
    } else {
        std::fs::write(d.schema.path().join("vault.cedarschema"), text).expect("writing");
        d.schema.path()
    };
    match PolicyEngine::load(Some(dir.to_owned()), d.fields.clone()) {
        Ok(engine) => {
            let loaded = engine.summary().policies;
            let again = engine.reload().expect("the same files load again");
            assert_eq!(again.policies, loaded);
        }
        Err(e) => assert!(!e.problems.is_empty(), "refused without a reason"),
    }
});
