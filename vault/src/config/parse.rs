//! Parsers of settings: how a value is read from the environment and from
//! the file, and how the docs table shows it.

use super::LogFormat;
use crate::store::sled::Durability;
use std::collections::HashMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How a setting is read from the environment and from the file, and how
/// the docs show its default.
pub(super) trait Parser<T> {
    /// What the file holds for it.
    type Raw: serde::de::DeserializeOwned;
    /// Reads it from an environment variable's value.
    fn env(text: &str) -> Result<T, String>;
    /// Reads it from the file's value.
    fn file(raw: Self::Raw) -> Result<T, String>;
    /// The value in the docs table.
    fn show(value: &T) -> String;
}

/// `text`, trimmed, as a `T`.
pub(super) fn from_text<T: FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("cannot parse {text:?}"))
}

/// A number or a boolean: typed in the file, parsed from the environment.
pub(super) enum Typed {}

impl<T: FromStr + Display + serde::de::DeserializeOwned> Parser<T> for Typed {
    type Raw = T;
    fn env(text: &str) -> Result<T, String> {
        from_text(text)
    }
    fn file(raw: T) -> Result<T, String> {
        Ok(raw)
    }
    fn show(value: &T) -> String {
        value.to_string()
    }
}

/// A string parsed the same way from the file and the environment (an address).
pub(super) enum Text {}

impl<T: FromStr + Display> Parser<T> for Text {
    type Raw = String;
    fn env(text: &str) -> Result<T, String> {
        from_text(text)
    }
    fn file(raw: String) -> Result<T, String> {
        from_text(&raw)
    }
    fn show(value: &T) -> String {
        format!("`{value}`")
    }
}

/// A string taken as it is (a label).
pub(super) enum Label {}

impl Parser<String> for Label {
    type Raw = String;
    fn env(text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }
    fn file(raw: String) -> Result<String, String> {
        Ok(raw)
    }
    fn show(value: &String) -> String {
        format!("`{value}`")
    }
}

/// A path, taken as it is; empty or absent: none.
pub(super) enum Path {}

impl Parser<PathBuf> for Path {
    type Raw = PathBuf;
    fn env(text: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(text))
    }
    fn file(raw: PathBuf) -> Result<PathBuf, String> {
        Ok(raw)
    }
    fn show(value: &PathBuf) -> String {
        if value.as_os_str().is_empty() {
            "none".into()
        } else {
            format!("`{}`", value.display())
        }
    }
}

impl Parser<Option<PathBuf>> for Path {
    type Raw = PathBuf;
    fn env(text: &str) -> Result<Option<PathBuf>, String> {
        Ok(Some(PathBuf::from(text)))
    }
    fn file(raw: PathBuf) -> Result<Option<PathBuf>, String> {
        Ok(Some(raw))
    }
    fn show(value: &Option<PathBuf>) -> String {
        value
            .as_ref()
            .map_or_else(|| "none".into(), <Self as Parser<PathBuf>>::show)
    }
}

/// Whole seconds.
pub(super) enum Secs {}

impl Parser<Duration> for Secs {
    type Raw = u64;
    fn env(text: &str) -> Result<Duration, String> {
        from_text(text).map(Duration::from_secs)
    }
    fn file(raw: u64) -> Result<Duration, String> {
        Ok(Duration::from_secs(raw))
    }
    fn show(value: &Duration) -> String {
        value.as_secs().to_string()
    }
}

/// Whole milliseconds.
pub(super) enum Millis {}

impl Parser<Duration> for Millis {
    type Raw = u64;
    fn env(text: &str) -> Result<Duration, String> {
        from_text(text).map(Duration::from_millis)
    }
    fn file(raw: u64) -> Result<Duration, String> {
        Ok(Duration::from_millis(raw))
    }
    fn show(value: &Duration) -> String {
        value.as_millis().to_string()
    }
}

/// One of a few names.
pub(super) enum Choice {}

/// A value named by one of a few words.
pub(super) trait Named: Sized + Copy + PartialEq + 'static {
    /// Every value and its name.
    const NAMES: &'static [(&'static str, Self)];
}

impl Named for Durability {
    const NAMES: &'static [(&'static str, Self)] =
        &[("fsync", Durability::Fsync), ("flush", Durability::Flush)];
}

impl Named for super::Storage {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("sled", super::Storage::Sled),
        ("postgres", super::Storage::Postgres),
    ];
}

impl Named for LogFormat {
    const NAMES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

impl<T: Named> Parser<T> for Choice {
    type Raw = String;
    fn env(text: &str) -> Result<T, String> {
        let text = text.trim();
        match T::NAMES.iter().find(|(name, _)| *name == text) {
            Some((_, value)) => Ok(*value),
            None => {
                let names: Vec<&str> = T::NAMES.iter().map(|(name, _)| *name).collect();
                Err(format!("{text:?} is not {}", names.join(" or ")))
            }
        }
    }
    fn file(raw: String) -> Result<T, String> {
        <Self as Parser<T>>::env(&raw)
    }
    fn show(value: &T) -> String {
        T::NAMES
            .iter()
            .find(|(_, v)| v == value)
            .map_or_else(String::new, |(name, _)| format!("`{name}`"))
    }
}

/// A table of names, in the file only.
pub(super) enum Table {}

impl Parser<HashMap<String, String>> for Table {
    type Raw = HashMap<String, String>;
    fn env(_: &str) -> Result<HashMap<String, String>, String> {
        Err("a table is read from the file only".into())
    }
    fn file(raw: HashMap<String, String>) -> Result<HashMap<String, String>, String> {
        Ok(raw)
    }
    fn show(value: &HashMap<String, String>) -> String {
        if value.is_empty() {
            "empty".into()
        } else {
            format!("{} entries", value.len())
        }
    }
}
