//! Bearer tokens: [`bearer`] on an `Authorization` header value and [`JwtVerifier::verify`]
//! on arbitrary token text, against a fixed key set (the HS256, RS256 and ES256 test keys of
//! `runway-access`). Never panics, and:
//! - `bearer` returns a non-empty, trimmed part of the header, and only for the `Bearer`
//!   scheme (any case);
//! - a token that verifies has an `alg` of HS256, RS256 or ES256, the configured `iss` and
//!   `aud` and an `exp`; and it stops verifying once the first character of its signature is
//!   changed (which always changes the signature's first byte).
//!
//! Input starting with `{` is also loaded as a JWKS document, which must not panic either.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use runway_access::{JwtSettings, JwtVerifier, bearer};

const ISSUER: &str = "https://auth.example.test";
const AUDIENCE: &str = "orders";

fn settings(jwks: &str) -> JwtSettings {
    JwtSettings {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks: jwks.to_owned(),
        leeway_seconds: 0,
    }
}

static VERIFIER: LazyLock<JwtVerifier> = LazyLock::new(|| {
    let jwks = include_str!("../../crates/access/tests/keys/jwks.json");
    JwtVerifier::new(&settings(jwks)).expect("the test key set loads")
});

fn check_verified(token: &str) {
    let Ok(claims) = VERIFIER.verify(token) else {
        return;
    };
    assert_eq!(claims["iss"], ISSUER, "{token}");
    let aud = &claims["aud"];
    assert!(
        aud == AUDIENCE
            || aud
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == AUDIENCE)),
        "{token}: aud {aud}"
    );
    assert!(claims.get("exp").is_some(), "{token}");

    let (signed, signature) = token.rsplit_once('.').expect("three parts");
    let first = signature
        .chars()
        .next()
        .expect("a signed token has a signature");
    let other = if first == 'A' { 'B' } else { 'A' };
    let tampered = format!("{signed}.{other}{}", &signature[first.len_utf8()..]);
    assert!(
        VERIFIER.verify(&tampered).is_err(),
        "{token} still verifies as {tampered}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(token) = bearer(text) {
        assert!(!token.is_empty());
        assert_eq!(token, token.trim());
        assert!(text.contains(token));
        let scheme = text.split_once(' ').map(|(scheme, _)| scheme);
        assert!(
            scheme.is_some_and(|s| s.eq_ignore_ascii_case("bearer")),
            "{text:?}"
        );
        check_verified(token);
    }
    check_verified(text);
    if text.starts_with('{') {
        let _ = JwtVerifier::new(&settings(text));
    }
});
