//! Route lookup: host match, then the longest matching path prefix. Pure.
//!
//! Routes that name the request's host are tried first; when none of their prefixes
//! match, routes without a `host` are tried. Within a group the longest `path_prefix`
//! wins (a plain string prefix, as nginx `location` and Envoy `prefix`); ties go to the
//! route listed first in the file.

use std::collections::HashMap;

/// An index into the snapshot's route list.
pub type RouteIndex = usize;

/// A lookup table built once per config snapshot.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_host: HashMap<Box<str>, Vec<(Box<str>, RouteIndex)>>,
    any_host: Vec<(Box<str>, RouteIndex)>,
}

// === impl RouteTable ===

impl RouteTable {
    /// `routes` yields `(host, path_prefix)` in file order; hosts are lower-case.
    pub fn build<'a>(routes: impl IntoIterator<Item = (Option<&'a str>, &'a str)>) -> Self {
        let mut table = RouteTable::default();
        for (index, (host, prefix)) in routes.into_iter().enumerate() {
            let entry = (Box::from(prefix), index);
            match host {
                Some(host) => table
                    .by_host
                    .entry(Box::from(host))
                    .or_default()
                    .push(entry),
                None => table.any_host.push(entry),
            }
        }
        // Longest prefix first; the sort is stable, so file order breaks ties.
        for list in table.by_host.values_mut() {
            list.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        }
        table
            .any_host
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        table
    }

    /// The route for `host` (as sent: any case, maybe with a port) and `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<RouteIndex> {
        if !self.by_host.is_empty() {
            if let Some(host) = host {
                let host = strip_port(host);
                let host = host.strip_suffix('.').unwrap_or(host);
                let list = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    self.by_host.get(host.to_ascii_lowercase().as_str())
                } else {
                    self.by_host.get(host)
                };
                if let Some(found) = list.and_then(|list| longest(list, path)) {
                    return Some(found);
                }
            }
        }
        longest(&self.any_host, path)
    }
}

fn longest(list: &[(Box<str>, RouteIndex)], path: &str) -> Option<RouteIndex> {
    list.iter()
        .find(|(prefix, _)| path.starts_with(&**prefix))
        .map(|&(_, index)| index)
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(colon) if host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..colon],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::build([
            (None, "/"),                           // 0
            (None, "/api"),                        // 1
            (None, "/api/v2"),                     // 2
            (Some("shop.example.com"), "/"),       // 3
            (Some("shop.example.com"), "/cart"),   // 4
            (Some("admin.example.com"), "/admin"), // 5
            (None, "/api"),                        // 6: duplicate prefix, loses the tie
        ])
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table();
        assert_eq!(t.find(None, "/"), Some(0));
        assert_eq!(t.find(None, "/index.html"), Some(0));
        assert_eq!(t.find(None, "/api"), Some(1));
        assert_eq!(t.find(None, "/api/v1/x"), Some(1));
        assert_eq!(t.find(None, "/api/v2/x"), Some(2));
        assert_eq!(t.find(Some("other.example.com"), "/api/v2"), Some(2));
    }

    #[test]
    fn host_routes_first_then_any_host() {
        let t = table();
        assert_eq!(t.find(Some("shop.example.com"), "/cart/1"), Some(4));
        assert_eq!(t.find(Some("shop.example.com"), "/api"), Some(3));
        assert_eq!(t.find(Some("SHOP.Example.com:8443"), "/cart"), Some(4));
        assert_eq!(t.find(Some("shop.example.com."), "/x"), Some(3));
        // A host route whose prefix does not match falls back to hostless routes.
        assert_eq!(t.find(Some("admin.example.com"), "/api"), Some(1));
        assert_eq!(t.find(Some("admin.example.com"), "/admin/users"), Some(5));
    }

    #[test]
    fn no_match() {
        let t = RouteTable::build([(Some("a.example"), "/"), (None, "/only")]);
        assert_eq!(t.find(Some("b.example"), "/x"), None);
        assert_eq!(t.find(None, "/x"), None);
        assert_eq!(t.find(Some("a.example"), "/x"), Some(0));
        assert_eq!(RouteTable::default().find(None, "/"), None);
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.example:80"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
