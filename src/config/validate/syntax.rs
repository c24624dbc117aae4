//! A `toml` error (bad syntax, wrong type, unknown key) as one located `Invalid`.
//!
//! `toml::de::Error` has a byte span and a message but no public key path, so the path
//! is recovered from the document itself: the text is re-parsed with error recovery
//! into spanned `DeTable`s, every key and value is listed with its start offset and
//! dotted path, and the error is attributed to the last one starting at or before it.
//! A standard table's span is only its `[header]`, so "contains" would not work;
//! "nearest preceding" does, because keys and values appear in document order.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::locate;
use crate::config::Invalid;

/// A key or value in the document: where it starts, and its dotted path.
#[derive(Debug)]
struct Entry {
    start: usize,
    depth: usize,
    path: String,
}

pub(super) fn invalid(src: &str, file: &str, err: &toml::de::Error) -> Invalid {
    let span = err.span().unwrap_or(0..0);
    let (line, column) = locate(src, span.start);
    let message = err.message().trim().to_owned();
    Invalid {
        file: file.to_owned(),
        line,
        column,
        key: key_for(src, span.start, &message),
        message,
    }
}

/// Best-effort dotted path of whatever sits at `offset`.
fn key_for(src: &str, offset: usize, message: &str) -> String {
    let (doc, _errors) = DeTable::parse_recoverable(src);
    let mut entries = Vec::new();
    collect_table(doc.get_ref(), "", 0, &mut entries);
    let nearest = entries
        .iter()
        .filter(|entry| entry.start <= offset)
        .max_by_key(|entry| (entry.start, entry.depth))
        .map(|entry| entry.path.clone())
        .unwrap_or_default();
    // "missing field `x`" points at the table that lacks it.
    match (quoted_after(message, "missing field `"), nearest.is_empty()) {
        (Some(field), true) => field.to_owned(),
        (Some(field), false) => format!("{nearest}.{field}"),
        (None, false) => nearest,
        (None, true) => quoted_after(message, "unknown field `")
            .unwrap_or("document")
            .to_owned(),
    }
}

fn collect_table(table: &DeTable<'_>, prefix: &str, depth: usize, out: &mut Vec<Entry>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        out.push(Entry {
            start: key.span().start,
            depth,
            path: path.clone(),
        });
        collect_value(value, path, depth + 1, out);
    }
}

fn collect_value(value: &Spanned<DeValue<'_>>, path: String, depth: usize, out: &mut Vec<Entry>) {
    match value.get_ref() {
        DeValue::Table(table) => collect_table(table, &path, depth, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_value(item, format!("{path}[{i}]"), depth + 1, out);
            }
        }
        _ => {}
    }
    out.push(Entry {
        start: value.span().start,
        depth,
        path,
    });
}

/// The text between `prefix` and the next backtick, if `message` contains `prefix`.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    rest.split('`').next()
}
