//! Golden files for manifest errors: each `ui/invalid/NAME.toml` must fail with exactly the
//! message in `ui/invalid/NAME.err`. Run with `RUNWAY_BLESS=1` to rewrite the `.err` files
//! after an intended change, then review the diff.

use std::path::Path;

use runway_manifest::Manifest;

#[test]
fn invalid_manifests_fail_with_their_golden_messages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/invalid");
    let bless = std::env::var_os("RUNWAY_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 8,
        "expected the golden cases in {}",
        dir.display()
    );
    let mut mismatches = Vec::new();
    for case in cases {
        let text = std::fs::read_to_string(&case).unwrap();
        let name = case.file_name().unwrap().to_str().unwrap();
        let error = match Manifest::parse(Path::new(name), &text) {
            Ok(_) => "(parsed without error)".to_owned(),
            Err(err) => err.to_string(),
        };
        let golden = case.with_extension("err");
        if bless {
            std::fs::write(&golden, format!("{error}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected.trim_end() != error.trim_end() {
            mismatches.push(format!(
                "{name}:\n--- expected\n{expected}\n--- actual\n{error}\n"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
