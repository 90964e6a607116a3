//! The gateway's checks on a request before routing: [`non_canonical_path`] on the path and
//! [`environment_label`] on the `Host` header. Never panics, and:
//! - a path passes exactly when it has no empty segment (`//`), no `.` or `..` segment, and
//!   every `%` starts an escape of two hex digits that does not encode a letter, a digit,
//!   `-._~` or `/` (an independent, byte-by-byte statement of the rule);
//! - a label is a prefix of the host, followed by `.`, one of the domains (`localhost` or a
//!   configured one, any case), then at most a trailing `.` and a numeric port; and the same
//!   host with a port added names the same label.
//!
//! Input: the whole text is the path; its first line is also the host and each further line
//! a configured environment domain (at most four).

#![no_main]

use libfuzzer_sys::fuzz_target;
use runway_manifest::{environment_label, non_canonical_path};

/// The canonical-path rule, written independently of the implementation.
fn is_canonical(path: &str) -> bool {
    if path.contains("//") || path.split('/').any(|s| s == "." || s == "..") {
        return false;
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                return false;
            };
            if !hi.is_ascii_hexdigit() || !lo.is_ascii_hexdigit() {
                return false;
            }
            let hex = |b: u8| (b as char).to_digit(16).expect("a hex digit") as u8;
            let c = hex(hi) * 16 + hex(lo);
            if c.is_ascii_alphanumeric() || b"-._~/".contains(&c) {
                return false;
            }
        }
        i += 1;
    }
    true
}

fn check_label(host: &str, domains: &[String]) {
    let Some(label) = environment_label(host, domains) else {
        return;
    };
    assert!(
        host.starts_with(label),
        "label {label:?} is not a prefix of {host:?}"
    );
    let rest = host[label.len()..]
        .strip_prefix('.')
        .unwrap_or_else(|| panic!("no `.` after label {label:?} in {host:?}"));
    let after_domain = std::iter::once("localhost")
        .chain(domains.iter().map(String::as_str))
        .filter_map(|domain| {
            let head = rest.get(..domain.len())?;
            head.eq_ignore_ascii_case(domain)
                .then(|| &rest[domain.len()..])
        })
        .find(|tail| {
            let tail = tail.strip_prefix('.').unwrap_or(tail);
            tail.is_empty()
                || tail
                    .strip_prefix(':')
                    .is_some_and(|port| port.bytes().all(|b| b.is_ascii_digit()))
        });
    assert!(
        after_domain.is_some(),
        "{host:?} → {label:?}: no domain of {domains:?} follows the label"
    );
    if !host.contains(':') {
        assert_eq!(
            environment_label(&format!("{host}:8080"), domains),
            Some(label),
            "{host:?} with a port names another environment"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let problem = non_canonical_path(text);
    assert_eq!(
        problem.is_none(),
        is_canonical(text),
        "{text:?}: the gateway says {problem:?}"
    );

    let mut lines = text.split('\n');
    let host = lines.next().unwrap_or_default();
    let domains: Vec<String> = lines.take(4).map(str::to_owned).collect();
    check_label(host, &domains);
});
