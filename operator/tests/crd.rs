//! The CRD: crds/ is what the Rust types generate (CI fails when it is out of date), and the schema refuses bad
//! resources with a clear message, checked here with the same CEL rules an API server runs.

use bft_operator::crd::{self, ByzantineCluster};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

const CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/byzantineclusters.bft.dev.yaml");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/drill.yaml");

#[test]
fn crds_yaml_is_what_the_types_generate() {
    let committed = std::fs::read_to_string(CRD_FILE).unwrap_or_default();
    assert!(
        committed == crd::crd_yaml(),
        "crds/byzantineclusters.bft.dev.yaml is out of date: run `cargo run -p bft-operator -- crd > crds/byzantineclusters.bft.dev.yaml`"
    );
}

fn schema() -> Value {
    let crd = ByzantineCluster::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn drill() -> Value {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let cluster = crd::from_yaml(&text).expect("the example is valid");
    serde_json::to_value(cluster).unwrap()
}

/// The CEL rules' messages for `object` (created, or updated from `old`).
fn refusals(object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(), object, old) {
        Ok(()) => vec![],
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn the_resource_is_namespaced_with_a_short_name_status_and_the_printer_columns() {
    let crd = ByzantineCluster::crd();
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["bftc".to_string()]));
    let version = &crd.spec.versions[0];
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Replicas", "Healthy", "Quorum", "View", "Primary", "Epoch", "Phase", "Age"
        ]
    );
}

#[test]
fn the_schema_carries_the_bounds_and_enums() {
    let s = schema();
    let spec = &s["properties"]["spec"]["properties"];
    assert_eq!(
        spec["replicas"]["minimum"].as_f64(),
        Some(crd::bounds::REPLICAS_MIN as f64)
    );
    assert_eq!(
        spec["replicas"]["maximum"].as_f64(),
        Some(crd::bounds::REPLICAS_MAX as f64)
    );
    let protocol = &spec["protocol"]["properties"];
    assert_eq!(
        protocol["viewChangeTimeoutMs"]["minimum"].as_f64(),
        Some(crd::bounds::VIEW_CHANGE_TIMEOUT_MS_MIN as f64)
    );
    assert_eq!(
        protocol["viewChangeTimeoutMs"]["maximum"].as_f64(),
        Some(crd::bounds::VIEW_CHANGE_TIMEOUT_MS_MAX as f64)
    );
    assert_eq!(
        protocol["checkpointInterval"]["maximum"].as_f64(),
        Some(crd::bounds::CHECKPOINT_INTERVAL_MAX as f64)
    );
    assert_eq!(
        protocol["logWindow"]["maximum"].as_f64(),
        Some(crd::bounds::LOG_WINDOW_MAX as f64)
    );
    assert_eq!(
        protocol["maxConcurrentRequests"]["maximum"].as_f64(),
        Some(crd::bounds::MAX_CONCURRENT_REQUESTS_MAX as f64)
    );
    assert_eq!(protocol["signatureAlgorithm"]["enum"], json!(["ed25519"]));
    assert_eq!(
        spec["detection"]["properties"]["quarantineDurationMs"]["maximum"].as_f64(),
        Some(crd::bounds::QUARANTINE_MS_MAX as f64)
    );
    assert_eq!(
        spec["replacement"]["properties"]["mode"]["enum"],
        json!(["Automatic", "Supervised", "Disabled"])
    );
    assert_eq!(
        spec["genesis"]["properties"]["accounts"]["items"]["properties"]["account"]["pattern"],
        json!("^[0-9a-f]{64}$")
    );
}

#[test]
fn a_valid_resource_passes_the_cel_rules() {
    assert_eq!(refusals(&drill(), None), Vec::<String>::new());
}

#[test]
fn a_verification_threshold_other_than_the_quorum_is_refused() {
    let mut bad = drill();
    bad["spec"]["protocol"]["verificationThreshold"] = json!(4);
    let refused = refusals(&bad, None);
    assert!(
        refused
            .iter()
            .any(|m| m.contains("verificationThreshold must be the quorum")),
        "{refused:?}"
    );
    let cluster: ByzantineCluster = serde_json::from_value(bad).unwrap();
    let error = cluster.spec.validate().unwrap_err().to_string();
    assert!(
        error.contains("verificationThreshold must be the quorum ceil((N+F+1)/2) = 5 for 7 replicas, got 4"),
        "{error}"
    );
}

#[test]
fn a_log_window_below_twice_the_checkpoint_interval_is_refused_at_apply_time() {
    let with = |interval: u64, window: Option<u64>| {
        let mut object = drill();
        object["spec"]["protocol"]["checkpointInterval"] = json!(interval);
        if let Some(window) = window {
            object["spec"]["protocol"]["logWindow"] = json!(window);
        }
        object
    };
    let message = "protocol.logWindow must be at least twice protocol.checkpointInterval";
    for (interval, window) in [(500, 999), (2_048, 4_095)] {
        let bad = with(interval, Some(window));
        let refused = refusals(&bad, None);
        assert!(refused.iter().any(|m| m.contains(message)), "{refused:?}");
        let cluster: ByzantineCluster = serde_json::from_value(bad).unwrap();
        let error = cluster.spec.validate().unwrap_err().to_string();
        assert!(error.contains(message), "{error}");
    }
    for (interval, window) in [(500, None), (500, Some(1000)), (2_048, Some(4_096)), (2_048, None)] {
        let good = with(interval, window);
        assert_eq!(refusals(&good, None), Vec::<String>::new(), "{interval} {window:?}");
        let cluster: ByzantineCluster = serde_json::from_value(good).unwrap();
        assert_eq!(cluster.spec.validate(), Ok(()));
        assert_eq!(cluster.spec.params().validate(), Ok(()));
    }
}

#[test]
fn genesis_replicas_and_the_signature_algorithm_cannot_change() {
    let old = drill();
    let mut new = old.clone();
    new["spec"]["genesis"]["generatedAccounts"]["balance"] = json!(5);
    let refused = refusals(&new, Some(&old));
    assert!(
        refused
            .iter()
            .any(|m| m.contains("genesis cannot change after creation")),
        "{refused:?}"
    );

    let mut new = old.clone();
    new["spec"]["replicas"] = json!(10);
    new["spec"]["protocol"]["verificationThreshold"] = json!(7);
    let refused = refusals(&new, Some(&old));
    assert!(
        refused
            .iter()
            .any(|m| m.contains("replicas cannot change after creation")),
        "{refused:?}"
    );

    // What may change, changes.
    let mut new = old.clone();
    new["spec"]["protocol"]["viewChangeTimeoutMs"] = json!(8000);
    assert_eq!(refusals(&new, Some(&old)), Vec::<String>::new());
}

/// The CRD as committed (what `kubectl apply` installs) carries the transition rules of the parameters fixed at
/// creation, with their messages, where the API server applies them.
#[test]
fn the_committed_crd_carries_the_transition_rules_of_the_fixed_parameters() {
    let committed: Value = serde_saphyr::from_str(&std::fs::read_to_string(CRD_FILE).unwrap()).unwrap();
    let spec = &committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let rules = |at: &Value| -> Vec<(String, String)> {
        at["x-kubernetes-validations"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| {
                        (
                            r["rule"].as_str().unwrap().to_string(),
                            r["message"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let protocol = &spec["protocol"];
    let protocol_rules = rules(protocol);
    let detection_rules = rules(&spec["detection"]);
    for (rules, rule, message) in [
        (
            &protocol_rules,
            crd::fixed::CHECKPOINT_INTERVAL_RULE,
            crd::fixed::CHECKPOINT_INTERVAL,
        ),
        (&protocol_rules, crd::fixed::LOG_WINDOW_RULE, crd::fixed::LOG_WINDOW),
        (
            &detection_rules,
            crd::fixed::QUARANTINE_DURATION_RULE,
            crd::fixed::QUARANTINE_DURATION,
        ),
    ] {
        assert!(rule.contains("oldSelf"), "{rule} is a transition rule");
        assert!(
            rules.contains(&(rule.to_string(), message.to_string())),
            "{rule} not in {rules:?}"
        );
    }
    assert!(
        protocol_rules
            .iter()
            .any(|(rule, _)| rule == "self.signatureAlgorithm == oldSelf.signatureAlgorithm"),
        "{protocol_rules:?}"
    );
    assert_eq!(
        protocol["properties"]["checkpointInterval"]["maximum"].as_f64(),
        Some(2048.0)
    );
    assert_eq!(protocol["properties"]["logWindow"]["maximum"].as_f64(), Some(4096.0));
}

/// The parameters that shape the replicated state (or how a replica judges a message) are fixed at creation: the
/// schema refuses changing them in place, and `validate_update` (the local platform) refuses the same with the
/// same message; what may change in place still does.
#[test]
fn parameters_fixed_at_creation_cannot_change_in_place() {
    let old = drill();
    let old_spec = || serde_json::from_value::<ByzantineCluster>(old.clone()).unwrap().spec;
    type Change = fn(&mut Value);
    let changes: [(&str, Change, &str); 6] = [
        (
            "checkpointInterval",
            |o| o["spec"]["protocol"]["checkpointInterval"] = json!(50),
            crd::fixed::CHECKPOINT_INTERVAL,
        ),
        (
            "quarantineDurationMs",
            |o| o["spec"]["detection"]["quarantineDurationMs"] = json!(60_000),
            crd::fixed::QUARANTINE_DURATION,
        ),
        (
            "logWindow given",
            |o| o["spec"]["protocol"]["logWindow"] = json!(1_000),
            crd::fixed::LOG_WINDOW,
        ),
        (
            "replicas",
            |o| {
                o["spec"]["replicas"] = json!(10);
                o["spec"]["protocol"]["verificationThreshold"] = json!(7);
            },
            "replicas cannot change after creation",
        ),
        (
            "genesis",
            |o| o["spec"]["genesis"]["generatedAccounts"]["count"] = json!(10),
            "genesis cannot change after creation",
        ),
        (
            // The window follows the interval when left out: changing the interval changes it too.
            "checkpointInterval with the window following it",
            |o| o["spec"]["protocol"]["checkpointInterval"] = json!(200),
            crd::fixed::LOG_WINDOW,
        ),
    ];
    for (what, change, message) in changes {
        let mut new = old.clone();
        change(&mut new);
        let refused = refusals(&new, Some(&old));
        assert!(refused.iter().any(|m| m.contains(message)), "{what}: {refused:?}");
        // As a fresh cluster it is valid: only the change is refused.
        assert_eq!(refusals(&new, None), Vec::<String>::new(), "{what}");
        let new_spec = serde_json::from_value::<ByzantineCluster>(new).unwrap().spec;
        assert_eq!(new_spec.validate(), Ok(()), "{what}");
        let error = new_spec.validate_update(&old_spec()).unwrap_err().to_string();
        assert!(error.contains(message), "{what}: {error}");
    }

    // Writing out the window the interval already gives changes nothing, and is taken.
    let mut new = old.clone();
    new["spec"]["protocol"]["logWindow"] = json!(200);
    assert_eq!(refusals(&new, Some(&old)), Vec::<String>::new());
    let new_spec = serde_json::from_value::<ByzantineCluster>(new).unwrap().spec;
    assert_eq!(new_spec.validate_update(&old_spec()), Ok(()));

    // What is local to each replica, or the operator's own, may change in place.
    let mut new = old.clone();
    new["spec"]["protocol"]["viewChangeTimeoutMs"] = json!(8000);
    new["spec"]["protocol"]["maxConcurrentRequests"] = json!(500);
    new["spec"]["detection"]["enabled"] = json!(false);
    new["spec"]["faultDrills"]["allowed"] = json!(false);
    new["spec"]["replacement"]["mode"] = json!("Supervised");
    new["spec"]["image"] = json!("bft-replica:next");
    assert_eq!(refusals(&new, Some(&old)), Vec::<String>::new());
    let new_spec = serde_json::from_value::<ByzantineCluster>(new).unwrap().spec;
    assert_eq!(new_spec.validate_update(&old_spec()), Ok(()));
}

#[test]
fn bounds_keep_the_log_within_memory() {
    let with = |interval: u64, window: Option<u64>| {
        let mut object = drill();
        object["spec"]["protocol"]["checkpointInterval"] = json!(interval);
        if let Some(window) = window {
            object["spec"]["protocol"]["logWindow"] = json!(window);
        }
        serde_json::from_value::<ByzantineCluster>(object).unwrap().spec
    };
    // The example: an interval of 1,000,000 would keep up to 2,000,000 slots in memory.
    for (interval, window, message) in [
        (
            1_000_000,
            None,
            "protocol.checkpointInterval must be between 1 and 2048, got 1000000",
        ),
        (
            2_049,
            None,
            "protocol.checkpointInterval must be between 1 and 2048, got 2049",
        ),
        (
            100,
            Some(4_097),
            "protocol.logWindow must be between 4 and 4096, got 4097",
        ),
    ] {
        let error = with(interval, window).validate().unwrap_err().to_string();
        assert!(error.contains(message), "{error}");
    }
    let largest = with(2_048, None);
    assert_eq!(largest.validate(), Ok(()));
    assert_eq!(largest.params().log_window, 4_096);
    assert_eq!(largest.params().validate(), Ok(()));
}

#[test]
fn bad_resources_get_clear_errors_where_no_api_server_checks_them() {
    let cases = [
        ("replicas: 7", "replicas: 3", "replicas must be between 4 and 64, got 3"),
        (
            "viewChangeTimeoutMs: 5000",
            "viewChangeTimeoutMs: 1",
            "protocol.viewChangeTimeoutMs must be between 10 and 3600000, got 1",
        ),
        (
            "signatureAlgorithm: ed25519",
            "signatureAlgorithm: rsa",
            "unknown variant `rsa`, expected `ed25519`",
        ),
        (
            "mode: Automatic",
            "mode: Sometimes",
            "unknown variant `Sometimes`, expected one of `Automatic`, `Supervised`, `Disabled`",
        ),
        (
            "verificationThreshold: 5",
            "verificationThreshold: 3",
            "= 5 for 7 replicas, got 3",
        ),
    ];
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    for (from, to, expected) in cases {
        assert!(text.contains(from), "{from}");
        let error = crd::from_yaml(&text.replace(from, to)).unwrap_err();
        assert!(error.contains(expected), "{to}: expected {expected:?} in {error:?}");
    }
    let error = crd::from_yaml(&text.replace("kind: ByzantineCluster", "kind: Deployment")).unwrap_err();
    assert!(error.contains("kind ByzantineCluster"), "{error}");
    let accounts = text.replace(
        "    generatedAccounts:\n      count: 256\n      balance: 1000000000\n",
        "    accounts:\n      - account: nothex\n        balance: 1\n",
    );
    let error = crd::from_yaml(&accounts).unwrap_err();
    assert!(
        error.contains("genesis.accounts[0].account must be an Ed25519 public key"),
        "{error}"
    );
}

/// Every field path of a JSON value, for finding fields a parse dropped.
fn paths(value: &Value, prefix: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                paths(v, format!("{prefix}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                paths(v, format!("{prefix}/{i}"), out);
            }
        }
        _ => out.push(prefix),
    }
}

#[test]
fn every_example_in_deploy_is_a_valid_cluster_with_no_field_the_schema_would_drop() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        let cluster = crd::from_yaml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let parsed = serde_json::to_value(&cluster).unwrap();
        assert_eq!(refusals(&parsed, None), Vec::<String>::new(), "{name}");
        // A misspelt field would be pruned by the API server without a word: every field written must survive.
        let written: Value = serde_saphyr::from_str(&text).unwrap();
        let (mut want, mut have) = (Vec::new(), Vec::new());
        paths(&written, String::new(), &mut want);
        paths(&parsed, String::new(), &mut have);
        for p in want {
            assert!(have.contains(&p), "{name}: {p} is not a field of ByzantineCluster");
        }
        checked.push(name);
    }
    assert!(checked.iter().any(|n| n.ends_with("drill.yaml")), "{checked:?}");

    // And the check bites: a misspelt field is found.
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("checkpointInterval", "checkpointIntervall");
    let written: Value = serde_saphyr::from_str(&text).unwrap();
    let parsed = crd::from_yaml(&text).map(|c| serde_json::to_value(c).unwrap());
    let (mut want, mut have) = (Vec::new(), Vec::new());
    paths(&written, String::new(), &mut want);
    if let Ok(parsed) = parsed {
        paths(&parsed, String::new(), &mut have);
    }
    assert!(want.iter().any(|p| !have.contains(p)));
}
