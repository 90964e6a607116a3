//! Cost and performance: CPU follows memory.

use crate::support::*;

fn crunch(name: &str, memory: &str, extra: &str) -> String {
    format!(
        "[[function]]\nname = \"{name}\"\ncomponent = \"{}\"\nmemory = \"{memory}\"\ntimeout = \"60s\"\n{extra}\n\n\
         [[function.trigger]]\nhttp = {{ route = \"/{name}\" }}\n\n",
        wasm("crunch").display()
    )
}

#[test]
fn cpu_follows_memory_and_unthrottled_functions_get_a_full_core() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    let manifest_text = [
        crunch("small", "128MiB", ""),
        crunch("free", "128MiB", "cpu = \"unthrottled\""),
        crunch("big", "1769MiB", ""),
    ]
    .concat();
    node.deploy(&manifest(&dir.path().join("app"), &manifest_text));
    let listed = node.cli(&["ls", "--json"]).json();
    let share = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()["cpu_share"]
            .as_f64()
            .unwrap()
    };
    assert!((share("small") - 128.0 / 1769.0).abs() < 1e-6);
    assert_eq!(share("free"), 1.0);
    assert_eq!(share("big"), 1.0);

    // Enough computation to spend a 128 MiB function's quota (7.2 ms of every 100 ms) many
    // times over on any machine.
    let throttled = |name: &str| {
        let out = node
            .cli(&[
                "invoke",
                name,
                "--path",
                &format!("/{name}?n=300000"),
                "--json",
            ])
            .json();
        assert_eq!(out["status"], 200, "{out}");
        assert!(
            out["body"].as_str().unwrap().contains("\"primes\":25997"),
            "{out}"
        );
        out["record"]["cpu_throttled_us"].as_u64().unwrap()
    };
    assert!(
        throttled("small") > 0,
        "a 128 MiB function is held to its share"
    );
    assert_eq!(
        throttled("free"),
        0,
        "cpu = \"unthrottled\" is never paused"
    );
    assert_eq!(throttled("big"), 0, "1,769 MiB buys a full core");
    // A short request stays within even the smallest quota: it is never paused.
    let out = node
        .cli(&["invoke", "small", "--path", "/small?n=100", "--json"])
        .json();
    assert_eq!(out["record"]["cpu_throttled_us"], 0, "{out}");

    // A node with proportional CPU off gives every function a full core.
    node.terminate();
    let node = TestNode::start(&dir.path().join("data"), &["--cpu-full-core-at", "off"]);
    let out = node
        .cli(&["invoke", "small", "--path", "/small?n=300000", "--json"])
        .json();
    assert_eq!(out["record"]["cpu_throttled_us"], 0, "{out}");
    let refused = serve_refused(&dir.path().join("other"), &["--cpu-full-core-at", "1MiB"]);
    assert!(refused.contains("too small"), "{refused}");
}
