//! What a caller may send a function: one rule for every entry point (gateway, admin invoke,
//! admin enqueue, queued jobs).
//!
//! `x-runway-*` headers are the platform's: a function can trust them (an API key id, a job
//! id, a schedule tick) only because every caller's copies are removed. Credentials reach a
//! function only through the gateway, where the route's auth checked them; a request the
//! platform builds or stores carries none.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};

/// Whether a caller's credentials may pass to the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// The gateway: a JWT its route verified, or a public route's own scheme.
    Keep,
    /// The admin API and stored jobs: nothing vouches for them.
    Strip,
}

/// Whether a header a caller sent must not reach the function.
pub(crate) fn is_removed(name: &str, credentials: Credentials) -> bool {
    // By bytes: a header name from a JSON body may be any text, and a slice of a `str` at
    // byte 9 would split a multi-byte character.
    let platform = name
        .as_bytes()
        .get(..9)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"x-runway-"));
    platform
        || (credentials == Credentials::Strip
            && [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION]
                .iter()
                .any(|credential| credential.as_str().eq_ignore_ascii_case(name)))
}

/// Removes from `headers` what a caller may not send a function.
pub(crate) fn strip_caller_headers(headers: &mut HeaderMap, credentials: Credentials) {
    // The common request has none: no allocation then.
    if !headers
        .keys()
        .any(|name| is_removed(name.as_str(), credentials))
    {
        return;
    }
    let names: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| is_removed(name.as_str(), credentials))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_ascii_are_checked_without_panicking() {
        // Byte 9 falls inside `ý`, a two-byte character.
        assert!(!is_removed("0ÉTI\u{14}ïý", Credentials::Strip));
        assert!(!is_removed("é", Credentials::Keep));
        assert!(is_removed("X-Runway-é", Credentials::Keep));
    }

    #[test]
    fn platform_headers_never_pass_and_credentials_only_through_the_gateway() {
        let mut headers = HeaderMap::new();
        headers.insert("x-runway-api-key-id", "forged".parse().unwrap());
        headers.insert("X-Runway-Job-Id", "forged".parse().unwrap());
        headers.insert(AUTHORIZATION, "Bearer jwt".parse().unwrap());
        headers.insert(COOKIE, "session=1".parse().unwrap());
        headers.insert("accept", "*/*".parse().unwrap());
        let mut gateway = headers.clone();
        strip_caller_headers(&mut gateway, Credentials::Keep);
        let names: Vec<&str> = gateway.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(gateway.contains_key(AUTHORIZATION) && gateway.contains_key("accept"));
        strip_caller_headers(&mut headers, Credentials::Strip);
        assert_eq!(
            headers
                .keys()
                .map(http::HeaderName::as_str)
                .collect::<Vec<_>>(),
            ["accept"]
        );
        assert!(is_removed("Authorization", Credentials::Strip));
        assert!(!is_removed("x-runway", Credentials::Keep));
    }
}
