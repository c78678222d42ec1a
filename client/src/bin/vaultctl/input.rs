//! What vaultctl reads besides its arguments: values from standard input
//! (kept out of shell history and `ps`), FIELD=VALUE pairs, lifetimes.

use std::io::BufRead;
use zeroize::Zeroizing;

/// One line of standard input, without its line ending.
pub fn read_stdin_line() -> std::io::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    Ok(trimmed)
}

/// `v`, or with `-` one line of standard input.
pub fn value_arg(v: String) -> std::io::Result<Zeroizing<String>> {
    if v == "-" {
        read_stdin_line()
    } else {
        Ok(Zeroizing::new(v))
    }
}

/// FIELD=VALUE arguments, or with `-` FIELD=VALUE lines of standard input.
pub fn parse_pairs(args: Vec<String>) -> Result<Vec<(String, Zeroizing<String>)>, String> {
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
