//! What vaultctl prints: aligned tables, disclosures, progress bars, and a
//! failed call's gRPC code and message.

use std::io::Write;
use vault_client::ClientError;

/// Prints rows as an aligned table with a header.
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
pub fn write_disclosed(
    out: &mut impl Write,
    values: &[vault_client::proto::Disclosed],
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
fn disclosed_json(values: &[vault_client::proto::Disclosed]) -> serde_json::Value {
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
    vault_client::proto::Disclosure::try_from(d)
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

/// Prints a failed call: its gRPC code and message, and each field
/// violation.
pub fn report(err: &ClientError) {
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

/// A progress bar drawn with `template` (hidden when `hidden`, e.g. for
/// `--json`).
pub fn progress_bar(hidden: bool, template: &str) -> indicatif::ProgressBar {
    let bar = if hidden {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
