//! The container as Kubernetes runs it, without a cluster: `runway serve` (the Dockerfile's
//! ENTRYPOINT) with the Dockerfile's ENV, then the ConfigMap's variables
//! (deploy/kubernetes/base/runway.env, which `envFrom` lays over the image's) and the
//! Secret's, on a PostgreSQL the test starts. What differs from a pod, and only that, is
//! replaced: loopback free ports for 0.0.0.0:8080/8081, and temporary folders for the
//! mounted data folder and secrets key.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use runway_test_postgres::TestPostgres;

use crate::support::*;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The runtime stage of the Dockerfile (after its last `FROM`), with continued lines joined.
fn runtime_stage() -> Vec<String> {
    let text = read("Dockerfile").replace("\\\n", " ");
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    lines[last_from..].to_vec()
}

/// The variables the image sets (`ENV K=V ...`).
fn image_variables() -> Vec<(String, String)> {
    runtime_stage()
        .iter()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|rest| {
            rest.split_whitespace()
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("ENV K=V");
                    (k.to_owned(), v.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The variables the ConfigMap gives every node.
fn config_map_variables() -> Vec<(String, String)> {
    read("deploy/kubernetes/base/runway.env")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn the_image_runs_runway_serve_and_every_variable_it_is_given_is_a_flag() {
    let stage = runtime_stage();
    assert!(
        stage.contains(&r#"ENTRYPOINT ["/usr/local/bin/runway", "serve"]"#.to_owned()),
        "{stage:#?}"
    );
    assert!(
        stage.iter().any(|l| l.starts_with("USER 10001")),
        "{stage:#?}"
    );
    // A misspelt variable would be ignored silently: each must be one `serve` reads.
    let help = runway(&["serve", "--help"], "http://127.0.0.1:1")
        .ok()
        .to_owned();
    let deployment = read("deploy/kubernetes/base/deployment.yaml");
    let secret_variables = ["RUNWAY_DATABASE_URL", "RUNWAY_ADMIN_TOKEN"];
    // The example overlay merges its own into the ConfigMap (`literals: - KEY=VALUE`).
    let overlay = read("deploy/kubernetes/overlays/example/kustomization.yaml");
    let overlay_variables = overlay
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- RUNWAY_"))
        .map(|l| format!("RUNWAY_{}", l.split_once('=').expect("KEY=VALUE").0));
    assert!(overlay.contains("RUNWAY_ENV_DOMAIN="), "{overlay}");
    for key in image_variables()
        .into_iter()
        .chain(config_map_variables())
        .map(|(k, _)| k)
        .chain(overlay_variables)
        .chain(secret_variables.map(str::to_owned))
    {
        let read_by_serve = help.contains(&format!("[env: {key}"))
            // Read by the binary, not a flag: the bootstrap admin token.
            || key == "RUNWAY_ADMIN_TOKEN";
        assert!(read_by_serve, "`runway serve` reads no variable {key}");
    }
    for key in secret_variables {
        assert!(deployment.contains(&format!("name: {key}")), "{key}");
    }
}

#[test]
fn a_node_configured_as_the_manifests_configure_it_serves_and_turns_ready() {
    let Some(server) = TestPostgres::shared() else {
        return;
    };
    let dir = tempdir();
    let mut variables: BTreeMap<String, String> = image_variables().into_iter().collect();
    // `envFrom` the ConfigMap, then `env` from the Secret: later ones win, as in a pod.
    variables.extend(config_map_variables());
    variables.insert("RUNWAY_DATABASE_URL".into(), server.create_database());
    variables.insert("RUNWAY_ADMIN_TOKEN".into(), ADMIN_TOKEN.into());
    // What the pod mounts, and the ports, replaced by their local equivalents; each must be
    // set by the image or the manifests for the node to start as it does in a pod.
    let key = dir.path().join("secrets/secrets.key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, format!("{}\n", "3c".repeat(32))).unwrap();
    // As the Secret volume mounts it (defaultMode 0440).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).unwrap();
    let local = [
        ("RUNWAY_LISTEN", "127.0.0.1:0".to_owned()),
        ("RUNWAY_ADMIN_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "RUNWAY_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("RUNWAY_SECRET_KEY_FILE", key.display().to_string()),
    ];
    for (name, value) in local {
        let set = variables.insert(name.to_owned(), value);
        assert!(
            set.is_some(),
            "neither the image nor the manifests set {name}"
        );
    }
    let variables: Vec<(String, String)> = variables.into_iter().collect();
    let node = TestNode::start_from_environment(&variables);

    // The probes the Deployment declares, without a token.
    for probe in ["/livez", "/readyz"] {
        let answer = node
            .admin_request(reqwest::Method::GET, probe, None)
            .send()
            .unwrap();
        assert_eq!(answer.status(), 200, "{probe}: {}", node.output());
    }
    // The bootstrap token from the Secret works, and the node serves what is deployed.
    node.deploy_example("hello");
    let hello = node.get("/hello");
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.text().unwrap(), "Hello, World!\n");
    let nodes = node.cli(&["nodes", "--json"]).json();
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(1), "{nodes}");
    // The home environment is the one the ConfigMap names.
    let listed = node.cli(&["env", "ls", "--json"]).json();
    let home = &config_map_variables()
        .into_iter()
        .find(|(k, _)| k == "RUNWAY_HOME_ENV")
        .unwrap()
        .1;
    assert_eq!(&listed[0]["name"], home.as_str(), "{listed}");

    // SIGTERM, as the kubelet sends after preStop: a clean, drained exit.
    let (status, output) = node.terminate();
    assert!(status.success(), "{output}");
    // Nothing but the data folder was written (the root filesystem is read-only in a pod).
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut written = written;
    written.sort();
    assert_eq!(written, ["data", "secrets"]);
}
