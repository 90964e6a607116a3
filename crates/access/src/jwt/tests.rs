use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;

fn keys_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(keys_dir().join(name)).unwrap()
}

fn settings() -> JwtSettings {
    JwtSettings {
        issuer: "https://auth.example.test".into(),
        audience: "orders".into(),
        jwks: String::from_utf8(read("jwks.json")).unwrap(),
        leeway_seconds: 0,
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims() -> serde_json::Value {
    json!({ "iss": "https://auth.example.test", "aud": "orders", "sub": "alice", "exp": now() + 600 })
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(&read("hs256.secret")),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&read("rs256.pem")).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&read("es256.pem")).unwrap(),
        _ => unreachable!(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn each_supported_algorithm_verifies_with_its_key() {
    let verifier = JwtVerifier::new(&settings()).unwrap();
    assert_eq!(verifier.key_count(), 3);
    for (alg, kid) in [
        (Algorithm::HS256, "hs"),
        (Algorithm::RS256, "rs"),
        (Algorithm::ES256, "es"),
    ] {
        let claims = verifier.verify(&sign(alg, Some(kid), &claims())).unwrap();
        assert_eq!(claims["sub"], "alice");
        // Without a kid, the key is chosen by algorithm.
        verifier.verify(&sign(alg, None, &claims)).unwrap();
    }
}

#[test]
fn alg_none_is_refused_before_any_key_is_looked_at() {
    let verifier = JwtVerifier::new(&settings()).unwrap();
    for alg in ["none", "None", "NONE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        let body = b64(claims().to_string().as_bytes());
        let token = format!("{header}.{body}.");
        assert_eq!(verifier.verify(&token), Err(JwtRefusal::AlgNone));
    }
}

#[test]
fn algorithm_confusion_is_refused() {
    let verifier = JwtVerifier::new(&settings()).unwrap();
    // The classic attack: HS256 "signed" with the RSA public key, naming the RSA key.
    let public_pem = read("rs256.pub.pem");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rs".into());
    let forged = encode(&header, &claims(), &EncodingKey::from_secret(&public_pem)).unwrap();
    assert_eq!(
        verifier.verify(&forged),
        Err(JwtRefusal::AlgorithmMismatch {
            token: "HS256".into(),
            key: "RS256".into()
        })
    );
    // Without a kid it is tried against the HS256 key, whose secret it does not know.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = None;
    let forged = encode(&header, &claims(), &EncodingKey::from_secret(&public_pem)).unwrap();
    assert_eq!(verifier.verify(&forged), Err(JwtRefusal::BadSignature));
    // An ES256 token naming the RSA key.
    let token = sign(Algorithm::ES256, Some("rs"), &claims());
    assert!(matches!(
        verifier.verify(&token),
        Err(JwtRefusal::AlgorithmMismatch { .. })
    ));
}

#[test]
fn claims_are_checked() {
    let verifier = JwtVerifier::new(&settings()).unwrap();
    let mut expired = claims();
    expired["exp"] = json!(now() - 60);
    assert_eq!(
        verifier.verify(&sign(Algorithm::RS256, Some("rs"), &expired)),
        Err(JwtRefusal::Expired)
    );
    let mut early = claims();
    early["nbf"] = json!(now() + 600);
    assert_eq!(
        verifier.verify(&sign(Algorithm::RS256, Some("rs"), &early)),
        Err(JwtRefusal::NotYetValid)
    );
    let mut audience = claims();
    audience["aud"] = json!("billing");
    assert_eq!(
        verifier.verify(&sign(Algorithm::ES256, Some("es"), &audience)),
        Err(JwtRefusal::WrongAudience)
    );
    let mut issuer = claims();
    issuer["iss"] = json!("https://evil.example.test");
    assert_eq!(
        verifier.verify(&sign(Algorithm::HS256, Some("hs"), &issuer)),
        Err(JwtRefusal::WrongIssuer)
    );
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        verifier.verify(&sign(Algorithm::HS256, Some("hs"), &no_exp)),
        Err(JwtRefusal::MissingClaim("exp".into()))
    );
}

#[test]
fn a_tampered_or_foreign_token_is_refused() {
    let verifier = JwtVerifier::new(&settings()).unwrap();
    let token = sign(Algorithm::RS256, Some("rs"), &claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut raised = claims();
    raised["sub"] = json!("root");
    let body = b64(raised.to_string().as_bytes());
    parts[1] = &body;
    assert_eq!(
        verifier.verify(&parts.join(".")),
        Err(JwtRefusal::BadSignature)
    );
    let wrong_secret = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(&wrong_secret),
        Err(JwtRefusal::BadSignature)
    );
    assert!(matches!(
        verifier.verify("abc"),
        Err(JwtRefusal::Malformed(_))
    ));
    assert!(matches!(
        verifier.verify(&sign(Algorithm::RS256, Some("other"), &claims())),
        Err(JwtRefusal::NoKey(_))
    ));
}

#[test]
fn unusable_key_sets_are_named() {
    let mut bad = settings();
    bad.jwks = r#"{"keys": []}"#.into();
    assert!(matches!(JwtVerifier::new(&bad), Err(JwtError::Empty)));
    bad.jwks = "not json".into();
    assert!(matches!(
        JwtVerifier::new(&bad),
        Err(JwtError::InvalidJwks(_))
    ));
    bad.jwks = r#"{"keys": [{"kty":"oct","kid":"x","alg":"RS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#.into();
    let err = JwtVerifier::new(&bad).unwrap_err().to_string();
    assert!(
        err.contains("key x") && err.contains("does not fit"),
        "{err}"
    );
    bad.jwks = r#"{"keys": [{"kty":"oct","kid":"short","k":"c2VjcmV0"}]}"#.into();
    let err = JwtVerifier::new(&bad).unwrap_err().to_string();
    assert!(err.contains("6 bytes is too short"), "{err}");
}

#[test]
fn without_a_kid_every_key_of_the_algorithm_is_tried() {
    // A set in the middle of a rotation: a new RSA key first, the one that signed second.
    let mut rotating = settings();
    let mut set: serde_json::Value = serde_json::from_str(&rotating.jwks).unwrap();
    let old = set["keys"][1].clone();
    let mut new = old.clone();
    new["kid"] = json!("rs-new");
    new["n"] = json!(b64(&[0xc5; 256]));
    set["keys"] = json!([new, old]);
    rotating.jwks = set.to_string();
    let verifier = JwtVerifier::new(&rotating).unwrap();
    verifier
        .verify(&sign(Algorithm::RS256, None, &claims()))
        .unwrap();
}
