//! `runway.toml` text → [`Manifest::parse_with`]: never panics, and a manifest it accepts is
//! one the server can store and read back.
//!
//! Properties checked on every accepted manifest, for each function:
//! - its configuration has no problem left ([`FunctionConfig::problems`] and the whole-set
//!   [`check_functions`] are empty), since `parse` collects them all;
//! - its configuration serialises to JSON (the store `expect`s that) and reads back equal,
//!   so the frozen release record is the configuration that was validated.
//!
//! The JWKS file a `[function.jwt]` table names is served from memory (the test key set of
//! `runway-access`), so the target never reads the disk.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use runway_manifest::{FunctionConfig, Manifest, check_functions};

const JWKS: &str = include_str!("../../crates/access/tests/keys/jwks.json");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) =
        Manifest::parse_with(Path::new("fuzz/runway.toml"), text, |_| Ok(JWKS.to_owned()))
    else {
        return;
    };
    let configs: Vec<&FunctionConfig> = manifest.functions.iter().map(|f| &f.config).collect();
    assert!(configs.iter().all(|c| c.problems().is_empty()));
    assert!(check_functions(&configs).is_empty());
    for config in configs {
        let json = serde_json::to_string(config).expect("a release record serialises");
        let back: FunctionConfig = serde_json::from_str(&json)
            .unwrap_or_else(|err| panic!("the release record {json} does not read back: {err}"));
        assert_eq!(
            &back, config,
            "the release record {json} reads back differently"
        );
    }
});
