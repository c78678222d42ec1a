//! Schema loading (`vault::schema::Schema::parse`, `fields.toml`) and the
//! validators, masks and index forms it sets up for every value a caller
//! sends.
//!
//! The input is split at the first NUL byte: before it, the text of a
//! `fields.toml` (`policies/fields.toml` is a seed); after it, a value,
//! which goes through every field of that schema if it loads, and of the
//! built-in schema always.
//!
//! Properties: nothing panics; a value that normalises is canonical
//! (normalising it again changes nothing) and non-empty, and its masked,
//! partial and index forms can be made; storing accepts only what
//! normalising does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vault::schema::Schema;

fn builtin() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| Schema::default_schema(4096).expect("the built-in schema loads"))
}

fn values(schema: &Schema, value: &str) {
    for field in schema.fields() {
        let Ok(canonical) = field.normalize(value) else {
            assert!(field.normalize_to_store(value, 1_800_000_000).is_err());
            continue;
        };
        assert!(
            !canonical.is_empty(),
            "{}: empty canonical value",
            field.name
        );
        let again = field
            .normalize(&canonical)
            .expect("a canonical value normalises");
        assert_eq!(
            again, canonical,
            "{}: normalising is not idempotent",
            field.name
        );
        let _ = field.masked(&canonical);
        let _ = field.partial(&canonical);
        let _ = field.index_form(&canonical);
        let _ = field.normalize_to_store(value, 1_800_000_000);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (schema_text, value) = text.split_once('\0').unwrap_or((text, ""));
    if let Ok(schema) = Schema::parse(schema_text, "fuzz/fields.toml", 4096) {
        assert_eq!(schema.len(), schema.fields().count());
        values(&schema, value);
    }
    values(builtin(), value);
});
