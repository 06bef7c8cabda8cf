//! The Kubernetes adapter against a mock API server (no cluster can run here): tower-test's mock service stands
//! in for the API server, keeps the objects it was given in memory, and records every request. Each scenario
//! asserts the exact requests the reconciler made (method, path and the bodies that matter): create, update,
//! replacement step by step with a restart at every step, deletion.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bft_core::crypto::KeyPair;
use bft_operator::controller::{self, Context};
use bft_operator::crd::{ByzantineCluster, ReplacementStep};
use bft_operator::health::Target;
use bft_operator::plan::{MemberId, Observed, ObservedMember};
use bft_operator::platform::{ReplicaError, Replicas};
use bft_operator::telemetry::Metrics;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

const NS: &str = "bft";
const CLUSTERS: &str = "/apis/bft.dev/v1alpha1/namespaces/bft/byzantineclusters";
const SECRETS: &str = "/api/v1/namespaces/bft/secrets";
const STS: &str = "/apis/apps/v1/namespaces/bft/statefulsets";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/bft/events";

/// One request as the API server saw it.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

impl Call {
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// An in-memory API server: objects by path, and the log of every request.
#[derive(Default)]
struct ApiServer {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    /// Whether prometheus-operator's CRDs are installed (its paths answer 404 otherwise).
    prometheus_operator: bool,
}

const MONITORING: &str = "/apis/monitoring.coreos.com/v1/namespaces/bft";

fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code, "message": reason}),
    )
}

fn labels_match(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let labels = &object["metadata"]["labels"];
        match term.split_once('=') {
            Some((k, v)) => labels[k] == v,
            None => labels.get(term).is_some(),
        }
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.replace("%2C", ",").replace("%3D", "=").replace("%2F", "/"))
    })
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl ApiServer {
    fn handle(&mut self, call: &Call) -> (u16, Value) {
        let path = call.path.clone();
        if path.starts_with(MONITORING) && !self.prometheus_operator {
            return status(404, "NotFound");
        }
        match call.method.as_str() {
            "GET" => {
                if let Some(object) = self.objects.get(&path) {
                    return (200, object.clone());
                }
                let selector = query_param(&call.query, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|(p, o)| {
                        p.rsplit_once('/').is_some_and(|(dir, _)| dir == path) && labels_match(o, &selector)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                if items.is_empty() && !call.query.contains("labelSelector") {
                    return status(404, "NotFound");
                }
                (
                    200,
                    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            "POST" => {
                let name = call.body["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let key = format!("{path}/{name}");
                if self.objects.contains_key(&key) {
                    return status(409, "AlreadyExists");
                }
                self.objects.insert(key, call.body.clone());
                (201, call.body.clone())
            }
            "PATCH" => {
                let (key, sub) = match path.strip_suffix("/status") {
                    Some(main) => (main.to_string(), true),
                    None => (path.clone(), false),
                };
                let object = self.objects.entry(key).or_insert_with(|| json!({}));
                if call.content_type.contains("json-patch") {
                    for op in call.body.as_array().unwrap() {
                        let pointer = op["path"].as_str().unwrap();
                        match op["op"].as_str().unwrap() {
                            "test" => {
                                let current = object.pointer(pointer).cloned().unwrap_or(Value::Null);
                                if current != op["value"] {
                                    return status(422, "Invalid");
                                }
                            }
                            "add" if pointer == "/metadata/finalizers" => {
                                object["metadata"]["finalizers"] = op["value"].clone()
                            }
                            "remove" => {
                                let (parent, index) = pointer.rsplit_once('/').unwrap();
                                let list = object.pointer_mut(parent).unwrap().as_array_mut().unwrap();
                                list.remove(index.parse().unwrap());
                            }
                            other => panic!("json patch op {other} {pointer} not handled by the mock"),
                        }
                    }
                } else if sub {
                    object["status"] = call.body["status"].clone();
                } else if call.content_type.contains("apply-patch") {
                    // Server-side apply by our one field manager: its fields are the object's.
                    let status = object.get("status").cloned();
                    *object = call.body.clone();
                    if let Some(status) = status {
                        object["status"] = status;
                    }
                } else {
                    merge(object, &call.body);
                }
                (200, object.clone())
            }
            "DELETE" => {
                if let Some(selector) = query_param(&call.query, "labelSelector") {
                    let gone: Vec<String> = self
                        .objects
                        .iter()
                        .filter(|(p, o)| {
                            p.rsplit_once('/').is_some_and(|(dir, _)| dir == path) && labels_match(o, &selector)
                        })
                        .map(|(p, _)| p.clone())
                        .collect();
                    let items: Vec<Value> = gone.iter().filter_map(|p| self.objects.remove(p)).collect();
                    return (
                        200,
                        json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}),
                    );
                }
                match self.objects.remove(&path) {
                    Some(object) => (200, object),
                    None => status(404, "NotFound"),
                }
            }
            other => panic!("{other} not handled by the mock"),
        }
    }
}

/// A client whose requests go to `server`, answered by a task that runs for the test's life.
fn client(server: Arc<Mutex<ApiServer>>) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let call = Call {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (code, body) = {
                let mut server = server.lock().unwrap();
                let answer = server.handle(&call);
                server.calls.push(call);
                answer
            };
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    kube::Client::new(service, NS)
}

/// (removed, added)
type Reconfiguration = (Vec<MemberId>, Vec<MemberId>);

/// Replicas as the test says they are.
#[derive(Clone, Default)]
struct FakeReplicas {
    observed: Arc<Mutex<Option<Observed>>>,
    reconfigurations: Arc<Mutex<Vec<Reconfiguration>>>,
    /// The reconfiguration call fails (as one that timed out after the replicas ordered the change would).
    fail_reconfigure: Arc<Mutex<bool>>,
    /// The API server, to see what status was recorded when a reconfiguration was submitted.
    server: Arc<Mutex<Option<Arc<Mutex<ApiServer>>>>>,
    /// The replacement step stored in the resource's status at each reconfiguration call.
    step_at_call: Arc<Mutex<Vec<Value>>>,
}

impl Replicas for FakeReplicas {
    async fn observe(&self, _targets: &[Target], _voters: usize) -> Option<Observed> {
        self.observed.lock().unwrap().clone()
    }

    async fn reconfigure(
        &self,
        _targets: &[Target],
        _admin: &KeyPair,
        remove: &[MemberId],
        add: &[Target],
    ) -> Result<u64, ReplicaError> {
        self.reconfigurations
            .lock()
            .unwrap()
            .push((remove.to_vec(), add.iter().map(|t| t.id).collect()));
        if let Some(server) = self.server.lock().unwrap().as_ref() {
            let step =
                server.lock().unwrap().objects[&format!("{CLUSTERS}/drill")]["status"]["replacement"]["step"].clone();
            self.step_at_call.lock().unwrap().push(step);
        }
        if *self.fail_reconfigure.lock().unwrap() {
            return Err(ReplicaError::Refused(
                "epoch 1 not in force with every added member after 60s".into(),
            ));
        }
        Ok(1)
    }

    async fn force_view_change(&self, _targets: &[Target], _admin: &KeyPair) -> Result<String, ReplicaError> {
        Ok("view 1".into())
    }

    async fn inject_fault(
        &self,
        _targets: &[Target],
        _admin: &KeyPair,
        _member: MemberId,
        _drill: Option<(String, f64)>,
    ) -> Result<String, ReplicaError> {
        Ok(String::new())
    }
}

fn healthy(ids: &[MemberId], quarantined: &[(MemberId, usize)]) -> Observed {
    Observed {
        members: ids
            .iter()
            .map(|id| {
                let by = quarantined.iter().find(|(q, _)| q == id).map_or(0, |(_, n)| *n);
                (
                    *id,
                    ObservedMember {
                        reachable: true,
                        quarantined_by: by,
                        last_executed: 200,
                        stable_checkpoint: 200,
                        epoch: 0,
                    },
                )
            })
            .collect(),
        epoch: Some(0),
        view: 0,
        primary: Some(1),
        stable_checkpoint: 200,
        ..Observed::default()
    }
}

struct Harness {
    server: Arc<Mutex<ApiServer>>,
    replicas: FakeReplicas,
    ctx: Arc<Context<FakeReplicas>>,
}

impl Harness {
    fn new() -> Harness {
        let server = Arc::new(Mutex::new(ApiServer::default()));
        let replicas = FakeReplicas::default();
        *replicas.server.lock().unwrap() = Some(server.clone());
        let ctx = Arc::new(Context::new(
            client(server.clone()),
            replicas.clone(),
            Arc::new(Metrics::default()),
        ));
        let cluster = json!({
            "apiVersion": "bft.dev/v1alpha1",
            "kind": "ByzantineCluster",
            "metadata": {"name": "drill", "namespace": NS, "uid": "uid-1", "generation": 1, "resourceVersion": "1"},
            "spec": {
                "replicas": 4,
                "image": "bft-replica:test",
                "genesis": {"generatedAccounts": {"count": 2, "balance": 1000}},
            }
        });
        server
            .lock()
            .unwrap()
            .objects
            .insert(format!("{CLUSTERS}/drill"), cluster);
        Harness { server, replicas, ctx }
    }

    fn object(&self) -> ByzantineCluster {
        serde_json::from_value(self.server.lock().unwrap().objects[&format!("{CLUSTERS}/drill")].clone()).unwrap()
    }

    fn status(&self) -> Value {
        self.server.lock().unwrap().objects[&format!("{CLUSTERS}/drill")]["status"].clone()
    }

    fn set_status(&self, status: Value) {
        self.server
            .lock()
            .unwrap()
            .objects
            .get_mut(&format!("{CLUSTERS}/drill"))
            .unwrap()["status"] = status;
    }

    fn observe(&self, observed: Observed) {
        *self.replicas.observed.lock().unwrap() = Some(observed);
    }

    /// One reconcile of the cluster as stored; the requests it made.
    async fn reconcile(&self) -> Vec<Call> {
        let before = self.server.lock().unwrap().calls.len();
        controller::reconcile(Arc::new(self.object()), self.ctx.clone())
            .await
            .expect("reconcile succeeds");
        self.server.lock().unwrap().calls[before..].to_vec()
    }

    fn exists(&self, path: &str) -> bool {
        self.server.lock().unwrap().objects.contains_key(path)
    }
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}

fn find<'a>(calls: &'a [Call], method: &str, path: &str) -> &'a Call {
    calls
        .iter()
        .find(|c| c.method == method && c.path == path)
        .unwrap_or_else(|| panic!("no {method} {path} in {:#?}", lines(calls)))
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

/// The requests of a pass over members `ids` whose keys exist, with the cluster objects; `run` are the members
/// whose StatefulSets are applied.
fn steady_pass(ids: &[MemberId], run: &[MemberId]) -> Vec<String> {
    let mut expected = vec![format!("GET {SECRETS}"), format!("GET {SECRETS}/drill-admin")];
    for id in ids {
        expected.push(format!("GET {SECRETS}/drill-member-{id}"));
    }
    expected.extend(s(&[
        "GET /api/v1/namespaces/bft/secrets/drill-accounts",
        "GET /api/v1/namespaces/bft/configmaps/drill-genesis",
        "PATCH /api/v1/namespaces/bft/services/drill-peers",
        "PATCH /api/v1/namespaces/bft/services/drill",
        "PATCH /apis/policy/v1/namespaces/bft/poddisruptionbudgets/drill",
        "PATCH /apis/networking.k8s.io/v1/namespaces/bft/networkpolicies/drill",
    ]));
    for id in run {
        expected.push(format!("PATCH {STS}/drill-{id}"));
    }
    expected.push(format!("PATCH {CLUSTERS}/drill/status"));
    expected
}

#[tokio::test]
async fn create_adds_the_finalizer_then_makes_keys_membership_services_budget_policy_and_members() {
    let h = Harness::new();
    // First the finalizer, and nothing else.
    let calls = h.reconcile().await;
    assert_eq!(lines(&calls), vec![format!("PATCH {CLUSTERS}/drill")]);
    assert!(calls[0].content_type.contains("json-patch"));
    assert_eq!(calls[0].body[1]["value"], json!(["bft.dev/cleanup"]));

    let calls = h.reconcile().await;
    let mut expected = vec![
        format!("GET {SECRETS}"),
        format!("GET {SECRETS}/drill-admin"),
        format!("POST {SECRETS}"),
    ];
    for id in 1..=4 {
        expected.push(format!("GET {SECRETS}/drill-member-{id}"));
        expected.push(format!("POST {SECRETS}"));
    }
    expected.extend(s(&[
        "GET /api/v1/namespaces/bft/secrets/drill-accounts",
        "POST /api/v1/namespaces/bft/secrets",
        "GET /api/v1/namespaces/bft/configmaps/drill-genesis",
        "POST /api/v1/namespaces/bft/configmaps",
        "PATCH /api/v1/namespaces/bft/services/drill-peers",
        "PATCH /api/v1/namespaces/bft/services/drill",
        "PATCH /apis/policy/v1/namespaces/bft/poddisruptionbudgets/drill",
        "PATCH /apis/networking.k8s.io/v1/namespaces/bft/networkpolicies/drill",
        "DELETE /apis/monitoring.coreos.com/v1/namespaces/bft/servicemonitors/drill",
        "DELETE /apis/monitoring.coreos.com/v1/namespaces/bft/prometheusrules/drill-alerts",
    ]));
    for id in 1..=4 {
        expected.push(format!("PATCH {STS}/drill-{id}"));
    }
    expected.push(format!("PATCH {CLUSTERS}/drill/status"));
    expected.push(format!("POST {EVENTS}"));
    assert_eq!(lines(&calls), expected);

    // Every apply is server-side, by one field manager, forced.
    for c in calls.iter().filter(|c| c.method == "PATCH") {
        assert!(
            c.content_type.contains("apply-patch"),
            "{} is not server-side apply",
            c.line()
        );
        assert!(
            c.query.contains("fieldManager=bft-operator") && c.query.contains("force=true"),
            "{}",
            c.query
        );
    }
    // Key Secrets are immutable and owned by the cluster.
    let key_secrets: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path == SECRETS)
        .collect();
    for secret in &key_secrets {
        assert_eq!(secret.body["immutable"], true);
        assert_eq!(secret.body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    }
    // Private keys go to Secrets only: never into status, events, the ConfigMap or a workload.
    for c in calls.iter().filter(|c| c.path != SECRETS) {
        let text = c.body.to_string();
        assert!(
            !text.contains("private-key.pem\":\"") && !text.contains("PRIVATE KEY"),
            "{} carries a key",
            c.line()
        );
        for secret in &key_secrets {
            if let Some(private) = secret.body["data"]["private-key.pem"].as_str() {
                assert!(!text.contains(private), "{} carries a private key", c.line());
            }
        }
    }
    let genesis = find(&calls, "POST", "/api/v1/namespaces/bft/configmaps");
    assert_eq!(genesis.body["immutable"], true);
    let members: Vec<Value> = serde_json::from_str(genesis.body["data"]["members.json"].as_str().unwrap()).unwrap();
    assert_eq!(members.len(), 4);
    assert_eq!(members[0]["address"], "drill-1-0.drill-peers.bft.svc:7000");
    let pdb = find(
        &calls,
        "PATCH",
        "/apis/policy/v1/namespaces/bft/poddisruptionbudgets/drill",
    );
    assert_eq!(
        pdb.body["spec"]["maxUnavailable"], 0,
        "no member answers yet: no disruption allowed"
    );
    let sts = find(&calls, "PATCH", &format!("{STS}/drill-3"));
    assert_eq!(sts.body["spec"]["replicas"], 1);
    assert_eq!(
        sts.body["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"],
        "drill-member-3"
    );
    let status = &find(&calls, "PATCH", &format!("{CLUSTERS}/drill/status")).body["status"];
    assert_eq!(status["phase"], "Creating");
    assert_eq!(status["nextMemberId"], 5);
    assert_eq!(status["quorumSize"], 3);
    assert_eq!(status["members"].as_array().unwrap().len(), 4);
    assert_eq!(status["members"][0]["publicKey"].as_str().unwrap().len(), 16);
    let event = find(&calls, "POST", EVENTS);
    assert_eq!(event.body["reason"], "Creating");
    assert_eq!(event.body["regarding"]["name"], "drill");
}

#[tokio::test]
async fn an_update_never_overwrites_a_key_and_reports_health() {
    let h = Harness::new();
    h.reconcile().await;
    h.reconcile().await;
    let keys_before: Vec<Value> = (1..=4)
        .map(|id| h.server.lock().unwrap().objects[&format!("{SECRETS}/drill-member-{id}")].clone())
        .collect();
    h.observe(healthy(&[1, 2, 3, 4], &[]));
    let calls = h.reconcile().await;
    assert_eq!(
        lines(&calls),
        steady_pass(&[1, 2, 3, 4], &[1, 2, 3, 4]),
        "no POST: keys exist"
    );
    for (id, before) in (1..=4).zip(keys_before) {
        assert_eq!(
            h.server.lock().unwrap().objects[&format!("{SECRETS}/drill-member-{id}")],
            before
        );
    }
    let status = h.status();
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["healthyReplicas"], 4);
    assert_eq!(status["quorumMet"], true);
    assert_eq!(status["primary"], "bft-agent-1");
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["observedGeneration"], 1);
    let pdb = find(
        &calls,
        "PATCH",
        "/apis/policy/v1/namespaces/bft/poddisruptionbudgets/drill",
    );
    assert_eq!(pdb.body["spec"]["maxUnavailable"], 1, "F = 1 of 4, all healthy");
}

/// Runs a pass twice from the same recorded status (the operator died before the first one's status write
/// landed), and checks the second repeats the first's requests and effects, nothing more.
async fn pass_with_restart(h: &Harness) -> Vec<Call> {
    let recorded = h.status();
    let first = h.reconcile().await;
    let after_first = h.server.lock().unwrap().objects.clone();
    h.set_status(recorded);
    let second = h.reconcile().await;
    let mut a = lines(&first);
    let mut b = lines(&second);
    // Events are published again by the repeat; set them aside.
    a.retain(|l| !l.contains("/events"));
    b.retain(|l| !l.contains("/events"));
    // The repeat makes the step's requests again, except the creations, which found their object there.
    a.retain(|l| !l.starts_with("POST"));
    assert!(
        !b.iter().any(|l| l.starts_with("POST")),
        "nothing created twice: {b:#?}"
    );
    assert_eq!(a, b, "a restart repeats the step's requests");
    let after_second = h.server.lock().unwrap().objects.clone();
    let keys = |objects: &BTreeMap<String, Value>| {
        objects
            .iter()
            .filter(|(p, _)| p.starts_with(SECRETS) || p.starts_with(STS))
            .map(|(p, o)| (p.clone(), o["data"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&after_first), keys(&after_second), "no key or workload made twice");
    second
}

#[tokio::test]
async fn a_quarantined_member_is_replaced_step_by_step_and_a_restart_at_every_step_resumes() {
    let h = Harness::new();
    h.reconcile().await;
    h.reconcile().await;
    h.observe(healthy(&[1, 2, 3, 4], &[]));
    h.reconcile().await;

    // Agent 2 is quarantined by two replicas (F + 1 = 2): stopped at once, member 5 reserved.
    h.observe(healthy(&[1, 2, 3, 4], &[(2, 2)]));
    let calls = pass_with_restart(&h).await;
    assert_eq!(
        &lines(&calls)[..3],
        &[
            format!("GET {SECRETS}"),
            format!("GET {SECRETS}/drill-admin"),
            format!("PATCH {STS}/drill-2")
        ]
    );
    let fence = find(&calls, "PATCH", &format!("{STS}/drill-2"));
    assert_eq!(fence.body["spec"]["replicas"], 0);
    assert!(
        !fence.body.to_string().contains("drill-member-2"),
        "the fenced workload mounts no key"
    );
    assert_eq!(h.status()["replacement"]["step"], "Fencing");
    assert!(
        h.exists(&format!("{SECRETS}/drill-member-2")),
        "the key goes once the status says fenced"
    );

    // Fencing recorded: the key is withdrawn.
    h.observe(healthy(&[1, 3, 4], &[(2, 2)]));
    let calls = pass_with_restart(&h).await;
    assert_eq!(
        &lines(&calls)[..4],
        &[
            format!("GET {SECRETS}"),
            format!("GET {SECRETS}/drill-admin"),
            format!("PATCH {STS}/drill-2"),
            format!("DELETE {SECRETS}/drill-member-2")
        ]
    );
    assert!(!h.exists(&format!("{SECRETS}/drill-member-2")), "the key is withdrawn");
    assert!(
        h.exists(&format!("{STS}/drill-2")),
        "the workload is kept, scaled down, for forensics"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.path == format!("{SECRETS}/drill-member-2") && c.method == "GET"),
        "never recreated"
    );
    let status = h.status();
    assert_eq!(status["replacement"]["remove"], json!([2]));
    assert_eq!(status["replacement"]["add"], json!([5]));
    assert_eq!(status["replacement"]["step"], "CreatingMembers");
    assert_eq!(status["nextMemberId"], 6, "the restart reserved no second id");

    // Creating: member 5's key and workload, as a learner.
    h.observe(healthy(&[1, 3, 4], &[(2, 2)]));
    let calls = pass_with_restart(&h).await;
    assert!(lines(&calls).contains(&format!("PATCH {STS}/drill-5")));
    let learner = find(&calls, "PATCH", &format!("{STS}/drill-5"));
    assert!(
        learner.body.to_string().contains("drill-member-5"),
        "the new member mounts its own, new key"
    );
    assert!(h.exists(&format!("{SECRETS}/drill-member-5")));
    assert!(
        !calls.iter().any(|c| c.path.contains("configmaps") && c.method != "GET"),
        "the genesis ConfigMap is never rewritten"
    );
    assert_eq!(h.status()["replacement"]["step"], "CatchingUp");

    // Caught up: on to the reconfiguration.
    h.observe(healthy(&[1, 3, 4, 5], &[(2, 2)]));
    pass_with_restart(&h).await;
    assert_eq!(h.status()["replacement"]["step"], "Reconfiguring");
    assert!(h.replicas.reconfigurations.lock().unwrap().is_empty());

    // Submitted (the restart submits again: the replicas must take a repeat as a no-op).
    let calls = h.reconcile().await;
    assert_eq!(*h.replicas.reconfigurations.lock().unwrap(), vec![(vec![2], vec![5])]);
    assert_eq!(h.status()["replacement"]["step"], "AwaitingEpoch");
    assert!(
        calls
            .iter()
            .any(|c| c.path == EVENTS && c.body["reason"] == "Reconfiguring")
    );

    // The new epoch: 5 votes, 2 is removed, then retired (its StatefulSet deleted, its volume kept).
    let mut o = healthy(&[1, 3, 4, 5], &[]);
    o.epoch = Some(1);
    o.membership = Some([1, 3, 4, 5].into());
    for m in o.members.values_mut() {
        m.epoch = 1;
    }
    h.observe(o);
    pass_with_restart(&h).await;
    assert_eq!(h.status()["replacement"]["step"], "Retiring");
    let calls = pass_with_restart(&h).await;
    assert!(lines(&calls).contains(&format!("DELETE {STS}/drill-2")));
    assert!(!h.exists(&format!("{STS}/drill-2")));
    let status = h.status();
    assert!(
        status.get("replacement").is_none() || status["replacement"].is_null(),
        "{status}"
    );
    assert_eq!(status["epoch"], 1);
    assert_eq!(status["healthyReplicas"], 4);
    let states: Vec<(u64, String)> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_u64().unwrap(), m["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        states,
        vec![
            (1, "Active".into()),
            (2, "Removed".into()),
            (3, "Active".into()),
            (4, "Active".into()),
            (5, "Active".into())
        ]
    );
    // A pod restarted now starts from the genesis the others share: members 1 to 4, with 2's public key, although
    // its Secret is gone.
    let genesis = h.server.lock().unwrap().objects["/api/v1/namespaces/bft/configmaps/drill-genesis"].clone();
    let members: Vec<Value> = serde_json::from_str(genesis["data"]["members.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        members.iter().map(|m| m["id"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(members[1]["public_key"].as_str().unwrap().len(), 64);

    // Deleted by hand now, it is not made up again from the current members: a warning says what to do.
    h.server
        .lock()
        .unwrap()
        .objects
        .remove("/api/v1/namespaces/bft/configmaps/drill-genesis");
    let calls = h.reconcile().await;
    assert!(
        !calls
            .iter()
            .any(|c| c.method == "POST" && c.path.contains("configmaps"))
    );
    assert!(
        calls
            .iter()
            .any(|c| c.path == EVENTS && c.body["reason"] == "GenesisMissing")
    );
    let _ = ReplacementStep::Retiring;
}

/// The reconfiguration's step is recorded before the call, and a call that fails after the replicas ordered the
/// change (its timeout, say) is a warning: the next pass finds the new membership and finishes, submitting
/// nothing again.
#[tokio::test]
async fn a_reconfiguration_call_that_fails_after_the_replicas_ordered_it_still_finishes() {
    let h = Harness::new();
    h.reconcile().await;
    h.reconcile().await;
    h.observe(healthy(&[1, 2, 3, 4], &[]));
    h.reconcile().await;
    h.observe(healthy(&[1, 2, 3, 4], &[(2, 2)]));
    h.reconcile().await;
    h.observe(healthy(&[1, 3, 4], &[(2, 2)]));
    h.reconcile().await;
    h.reconcile().await;
    h.observe(healthy(&[1, 3, 4, 5], &[(2, 2)]));
    h.reconcile().await;
    assert_eq!(h.status()["replacement"]["step"], "Reconfiguring");

    *h.replicas.fail_reconfigure.lock().unwrap() = true;
    let calls = h.reconcile().await;
    assert_eq!(*h.replicas.reconfigurations.lock().unwrap(), vec![(vec![2], vec![5])]);
    assert_eq!(
        *h.replicas.step_at_call.lock().unwrap(),
        vec![json!("AwaitingEpoch")],
        "recorded before the call"
    );
    assert_eq!(h.status()["replacement"]["step"], "AwaitingEpoch");
    let failed = calls
        .iter()
        .find(|c| c.path == EVENTS && c.body["reason"] == "ReconfigurationFailed")
        .expect("a ReconfigurationFailed event");
    assert_eq!(failed.body["type"], "Warning");
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.path == EVENTS && c.body["reason"] == "Reconfiguring")
            .count(),
        1,
        "each event published once"
    );

    // The replicas did order it: the new epoch, 5 in and 2 out.
    let mut o = healthy(&[1, 3, 4, 5], &[]);
    o.epoch = Some(1);
    o.membership = Some([1, 3, 4, 5].into());
    for m in o.members.values_mut() {
        m.epoch = 1;
    }
    h.observe(o);
    h.reconcile().await;
    assert_eq!(h.status()["replacement"]["step"], "Retiring");
    h.reconcile().await;
    assert!(h.status()["replacement"].is_null(), "{}", h.status());
    assert_eq!(
        h.replicas.reconfigurations.lock().unwrap().len(),
        1,
        "never submitted again"
    );
    assert_eq!(h.status()["epoch"], 1);
}

#[tokio::test]
async fn monitoring_objects_follow_the_spec_and_their_absence_does_not_stop_the_cluster() {
    let h = Harness::new();
    let set_monitoring = |on: bool| {
        let mut server = h.server.lock().unwrap();
        let cluster = server.objects.get_mut(&format!("{CLUSTERS}/drill")).unwrap();
        cluster["spec"]["monitoring"] = json!({"serviceMonitor": on, "prometheusRule": on});
        // As the API server does on a change of spec.
        cluster["metadata"]["generation"] = json!(cluster["metadata"]["generation"].as_i64().unwrap() + 1);
    };
    set_monitoring(true);
    h.reconcile().await;
    // No prometheus-operator: a warning, and the members are created all the same.
    let calls = h.reconcile().await;
    assert!(lines(&calls).contains(&format!("PATCH {STS}/drill-4")));
    let warning = calls
        .iter()
        .find(|c| c.path == EVENTS && c.body["reason"] == "MonitoringUnavailable")
        .expect("a MonitoringUnavailable event");
    assert_eq!(warning.body["type"], "Warning");

    // Installed: a ServiceMonitor on the peer Service (every member, ready or not) and the scoped rules.
    h.server.lock().unwrap().prometheus_operator = true;
    let calls = h.reconcile().await;
    let monitor = find(&calls, "PATCH", &format!("{MONITORING}/servicemonitors/drill"));
    assert!(monitor.content_type.contains("apply-patch"));
    assert_eq!(
        monitor.body["spec"]["selector"]["matchLabels"]["bft.dev/service"],
        "peers"
    );
    let peers = h.server.lock().unwrap().objects["/api/v1/namespaces/bft/services/drill-peers"].clone();
    assert_eq!(peers["metadata"]["labels"]["bft.dev/service"], "peers");
    assert!(
        peers["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics")
    );
    let rule = find(&calls, "PATCH", &format!("{MONITORING}/prometheusrules/drill-alerts"));
    assert_eq!(rule.body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    let rules = rule.body["spec"]["groups"][0]["rules"].as_array().unwrap();
    let quorum_lost = rules.iter().find(|r| r["alert"] == "BftQuorumLost").unwrap();
    assert!(quorum_lost["expr"].as_str().unwrap().contains("job=\"drill\""));

    // Unchanged spec: applied again, nothing deleted.
    let calls = h.reconcile().await;
    assert!(lines(&calls).contains(&format!("PATCH {MONITORING}/servicemonitors/drill")));

    // Turned off: both deleted, once; the passes after it send no delete.
    set_monitoring(false);
    h.reconcile().await;
    let calls = h.reconcile().await;
    assert!(
        !calls.iter().any(|c| c.path.starts_with(MONITORING)),
        "{:?}",
        lines(&calls)
    );
    assert!(!h.exists(&format!("{MONITORING}/servicemonitors/drill")));
    assert!(!h.exists(&format!("{MONITORING}/prometheusrules/drill-alerts")));
}

#[tokio::test]
async fn deletion_deletes_the_volumes_then_releases_the_finalizer() {
    let h = Harness::new();
    h.reconcile().await;
    h.reconcile().await;
    h.server.lock().unwrap().objects.insert(
        "/api/v1/namespaces/bft/persistentvolumeclaims/data-drill-1-0".into(),
        json!({"metadata": {"name": "data-drill-1-0", "labels": {"bft.dev/cluster": "drill", "bft.dev/member": "1"}}}),
    );
    h.server.lock().unwrap().objects.insert(
        "/api/v1/namespaces/bft/persistentvolumeclaims/data-other-1-0".into(),
        json!({"metadata": {"name": "data-other-1-0", "labels": {"bft.dev/cluster": "other"}}}),
    );
    {
        let mut server = h.server.lock().unwrap();
        let object = server.objects.get_mut(&format!("{CLUSTERS}/drill")).unwrap();
        object["metadata"]["deletionTimestamp"] = json!("2026-11-24T20:00:00Z");
    }
    let calls = h.reconcile().await;
    assert_eq!(
        lines(&calls),
        vec![
            "DELETE /api/v1/namespaces/bft/persistentvolumeclaims".to_string(),
            format!("POST {EVENTS}"),
            format!("PATCH {CLUSTERS}/drill"),
        ]
    );
    assert!(
        calls[0].query.contains("labelSelector=bft.dev%2Fcluster%3Ddrill"),
        "{}",
        calls[0].query
    );
    assert_eq!(calls[2].body[1]["op"], "remove");
    assert!(h.object().metadata.finalizers.unwrap_or_default().is_empty());
    assert!(!h.exists("/api/v1/namespaces/bft/persistentvolumeclaims/data-drill-1-0"));
    assert!(
        h.exists("/api/v1/namespaces/bft/persistentvolumeclaims/data-other-1-0"),
        "another cluster's volume stays"
    );
}

#[tokio::test]
async fn drills_asked_by_annotation_run_once_and_are_refused_unless_allowed() {
    let h = Harness::new();
    h.reconcile().await;
    h.reconcile().await;
    h.observe(healthy(&[1, 2, 3, 4], &[]));
    {
        let mut server = h.server.lock().unwrap();
        let object = server.objects.get_mut(&format!("{CLUSTERS}/drill")).unwrap();
        object["metadata"]["annotations"] = json!({"bft.dev/force-view-change": "1"});
    }
    let calls = h.reconcile().await;
    let refused = calls.iter().find(|c| c.path == EVENTS).expect("an event");
    assert_eq!(refused.body["reason"], "RequestRefused");
    assert_eq!(refused.body["type"], "Warning");
    let mark = find(&calls, "PATCH", &format!("{CLUSTERS}/drill"));
    assert_eq!(
        mark.body["metadata"]["annotations"]["bft.dev/handled"],
        "force-view-change=1"
    );
    // Handled: the next pass does not ask again.
    let calls = h.reconcile().await;
    assert!(!calls.iter().any(|c| c.path == EVENTS));
}

/// The operator's memory with 50 clusters of 7 members reconciled against the mock API server (a figure for
/// the report; run with `cargo test -p bft-operator --release --test kube_adapter -- --ignored --nocapture`).
#[tokio::test]
#[ignore = "prints a figure (memory at 50 clusters); run in release with --ignored --nocapture"]
async fn memory_at_fifty_clusters() {
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
    let before = rss_kib();
    let server = Arc::new(Mutex::new(ApiServer::default()));
    let replicas = FakeReplicas::default();
    *replicas.observed.lock().unwrap() = Some(healthy(&[1, 2, 3, 4, 5, 6, 7], &[]));
    let ctx = Arc::new(Context::new(
        client(server.clone()),
        replicas,
        Arc::new(Metrics::default()),
    ));
    let started = std::time::Instant::now();
    for i in 0..50 {
        let cluster = json!({
            "apiVersion": "bft.dev/v1alpha1", "kind": "ByzantineCluster",
            "metadata": {"name": format!("c{i}"), "namespace": NS, "uid": format!("uid-{i}"), "generation": 1, "finalizers": ["bft.dev/cleanup"]},
            "spec": {"replicas": 7, "image": "bft-replica:test", "genesis": {"generatedAccounts": {"count": 16, "balance": 1000}}},
        });
        server
            .lock()
            .unwrap()
            .objects
            .insert(format!("{CLUSTERS}/c{i}"), cluster);
    }
    let mut requests = 0;
    for _ in 0..3 {
        // The mock's request log is not the operator's memory: counted, then dropped.
        let mut server_log = std::mem::take(&mut server.lock().unwrap().calls);
        requests += server_log.len();
        server_log.clear();
        for i in 0..50 {
            let object: ByzantineCluster =
                serde_json::from_value(server.lock().unwrap().objects[&format!("{CLUSTERS}/c{i}")].clone()).unwrap();
            controller::reconcile(Arc::new(object), ctx.clone()).await.unwrap();
        }
    }
    requests += server.lock().unwrap().calls.len();
    server.lock().unwrap().calls.clear();
    // The mock's own store is counted too: an upper bound on the operator's share.
    println!(
        "50 clusters x 7 members, 3 passes each: {requests} requests in {:?}; RSS {} KiB before, {} KiB after (includes the mock API server's objects)",
        started.elapsed(),
        before,
        rss_kib()
    );
}
