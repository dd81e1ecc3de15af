//! In-process tests: a real listener on 127.0.0.1:0 driven with reqwest.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::script::Script;
use super::{SimArgs, SimError, SimState, router, run};

struct Sim {
    base: String,
    state: SimState,
    http: reqwest::Client,
}

impl Sim {
    async fn start() -> Sim {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = SimState::default();
        tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
        Sim {
            base: format!("http://{addr}"),
            state,
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn stats(&self) -> Value {
        self.get("/sim/stats").await.1
    }
}

const METADATA_TYPE: &str = "type.googleapis.com/google.api.servicemanagement.v1.OperationMetadata";

#[tokio::test]
async fn create_runs_then_completes_with_response() {
    let sim = Sim::start().await;
    let body = json!({"nodes": 3, "simulate": {"durationSeconds": 0.3}});
    let (status, op) = sim.post("/v1/projects/demo/clusters", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(op["name"], "operations/op-1");
    assert!(
        op.get("done").is_none(),
        "done must be omitted while running: {op}"
    );
    assert!(op.get("response").is_none() && op.get("error").is_none());
    let meta = &op["metadata"];
    assert_eq!(meta["@type"], METADATA_TYPE);
    assert_eq!(
        meta["resourceNames"],
        json!(["projects/demo/clusters/res-1"])
    );
    assert_eq!(meta["progressPercentage"], 0);
    assert!(meta.get("steps").is_none());
    let start: jiff::Timestamp = meta["startTime"].as_str().unwrap().parse().unwrap();
    let created = sim.stats().await["operations"]["operations/op-1"]["createdAtMs"].clone();
    assert_eq!(json!(start.as_millisecond()), created);

    let (status, running) = sim.get("/v1/operations/op-1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(running.get("done").is_none());

    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, done) = sim.get("/v1/operations/op-1").await;
    assert_eq!(done["done"], true);
    assert!(done.get("error").is_none());
    assert_eq!(done["metadata"]["progressPercentage"], 100);
    let response = &done["response"];
    assert_eq!(response["@type"], "type.googleapis.com/lro.sim.v1.Resource");
    assert_eq!(response["name"], "projects/demo/clusters/res-1");
    assert_eq!(response["state"], "ACTIVE");
    assert_eq!(response["spec"], json!({"nodes": 3}));
    assert_eq!(response["uid"].as_str().map(str::len), Some(36));

    let stats = sim.stats().await;
    let op_stats = &stats["operations"]["operations/op-1"];
    assert_eq!(op_stats["doneAtMs"], json!(created.as_u64().unwrap() + 300));
    assert_eq!(op_stats["outcome"], "success");
}

#[tokio::test]
async fn progress_and_steps_follow_elapsed_time() {
    let sim = Sim::start().await;
    let script = Script {
        duration_seconds: 9.0,
        steps: true,
        ..Script::default()
    };
    let created = sim.state.now_ms() - 4_600;
    sim.state
        .store()
        .insert(|n| format!("p/r-{n}"), json!({}), script, None, created);
    let (_, op) = sim.get("/v1/operations/op-1").await;
    assert!(op.get("done").is_none());
    assert_eq!(op["metadata"]["progressPercentage"], 50);
    let steps = json!([
        {"description": "Validating", "status": "DONE"},
        {"description": "Provisioning", "status": "IN_PROGRESS"},
        {"description": "Finalizing", "status": "NOT_STARTED"},
    ]);
    assert_eq!(op["metadata"]["steps"], steps);

    let script = Script {
        duration_seconds: 10.0,
        progress_step: 25,
        ..Script::default()
    };
    let created = sim.state.now_ms() - 7_400;
    sim.state
        .store()
        .insert(|n| format!("p/r-{n}"), json!({}), script, None, created);
    let (_, op) = sim.get("/v1/operations/op-2").await;
    assert_eq!(op["metadata"]["progressPercentage"], 50);

    let body = json!({"simulate": {"progress": false, "durationSeconds": 0}});
    let (_, op) = sim.post("/v1/things", body).await;
    assert_eq!(op["done"], true);
    assert!(op["metadata"].get("progressPercentage").is_none());
}

#[tokio::test]
async fn error_outcome() {
    let sim = Sim::start().await;
    let simulate =
        json!({"durationSeconds": 0, "outcome": "error", "errorCode": 5, "errorMessage": "boom"});
    let (status, op) = sim.post("/v1/a/b", json!({"simulate": simulate})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(op["done"], true);
    assert_eq!(op["error"]["code"], 5);
    assert_eq!(op["error"]["message"], "boom");
    // google.rpc.Status details, as Google APIs send them: an ErrorInfo first.
    assert_eq!(
        op["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(op["error"]["details"][0]["reason"], "RESOURCE_NOT_FOUND");
    assert!(op.get("response").is_none());

    let (_, op) = sim
        .post(
            "/v1/a/b",
            json!({"simulate": {"durationSeconds": 0, "outcome": "error"}}),
        )
        .await;
    assert_eq!(op["error"]["code"], 9);
    assert_eq!(op["error"]["message"], "simulated failure");
}

#[tokio::test]
async fn cancel_makes_running_op_cancelled() {
    let sim = Sim::start().await;
    sim.post("/v1/x", json!({"simulate": {"durationSeconds": 60}}))
        .await;
    let (status, body) = sim.post("/v1/operations/op-1:cancel", json!({})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (_, op) = sim.get("/v1/operations/op-1").await;
    assert_eq!(op["done"], true);
    assert_eq!(
        op["error"],
        json!({"code": 1, "message": "operation cancelled"})
    );
    assert!(op.get("response").is_none());

    let (status, body) = sim.post("/v1/operations/nope:cancel", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["status"], "NOT_FOUND");

    let stats = sim.stats().await;
    let op_stats = &stats["operations"]["operations/op-1"];
    assert_eq!(op_stats["cancels"], 1);
    assert_eq!(op_stats["outcome"], "cancelled");
    assert!(op_stats["doneAtMs"].is_u64());

    // Cancelling a finished operation changes nothing.
    sim.post("/v1/x", json!({"simulate": {"durationSeconds": 0}}))
        .await;
    sim.post("/v1/operations/op-2:cancel", json!({})).await;
    let (_, op) = sim.get("/v1/operations/op-2").await;
    assert!(op.get("response").is_some());
}

#[tokio::test]
async fn request_id_deduplicates_creates() {
    let sim = Sim::start().await;
    let (_, first) = sim.post("/v1/p/c?requestId=abc-1", json!({"a": 1})).await;
    let (status, again) = sim.post("/v1/p/c?requestId=abc-1", json!({"a": 2})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["name"], again["name"]);
    let (_, other) = sim.post("/v1/p/c?requestId=abc-2", json!({})).await;
    assert_eq!(other["name"], "operations/op-2");

    let stats = sim.stats().await;
    assert_eq!(stats["creates"], 2);
    assert_eq!(stats["duplicateCreates"], 1);
    assert_eq!(stats["operations"]["operations/op-1"]["requestId"], "abc-1");
    let (_, list) = sim.get("/v1/operations").await;
    assert_eq!(list["operations"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn start_status_rejects_create() {
    let sim = Sim::start().await;
    let (status, body) = sim
        .post("/v1/p/c", json!({"simulate": {"startStatus": 400}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], 400);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    let (status, body) = sim
        .post(
            "/v1/p/c?requestId=r",
            json!({"simulate": {"startStatus": 409}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], 409);
    let (_, list) = sim.get("/v1/operations").await;
    assert_eq!(list, json!({"operations": []}));
    let stats = sim.stats().await;
    assert_eq!(
        (stats["creates"].clone(), stats["duplicateCreates"].clone()),
        (json!(0), json!(0))
    );

    let (status, body) = sim
        .post("/v1/p/c", json!({"simulate": {"outcome": "maybe"}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
}

#[tokio::test]
async fn unknown_operation_is_404_envelope() {
    let sim = Sim::start().await;
    let (status, body) = sim.get("/v1/operations/x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let expected = json!({"error": {"code": 404, "message": "operation operations/x not found", "status": "NOT_FOUND"}});
    assert_eq!(body, expected);
}

#[tokio::test]
async fn stats_count_v1_requests_only() {
    let sim = Sim::start().await;
    sim.post("/v1/p/c", json!({"simulate": {"durationSeconds": 0.3}}))
        .await;
    sim.get("/v1/operations/op-1").await;
    sim.get("/v1/operations/op-1").await;
    sim.get("/v1/operations/missing").await;
    sim.get("/v1/operations").await;
    sim.post("/sim/operations", json!({})).await;
    let stats = sim.stats().await;
    assert_eq!(stats["creates"], 1);
    assert_eq!(stats["totalRequests"], 5);
    let op = &stats["operations"]["operations/op-1"];
    assert_eq!(op["gets"], 2);
    assert_eq!(op["getTimesMs"].as_array().map(Vec::len), Some(2));
    assert_eq!(op["doneAtMs"], Value::Null);
    assert_eq!(op["requestId"], Value::Null);
    assert_eq!(stats["operations"]["operations/op-2"]["gets"], 0);
    let log: Vec<(String, String, u64)> = stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            (s("method"), s("path"), r["status"].as_u64().unwrap())
        })
        .collect();
    let expected = [
        ("POST", "/v1/p/c", 200),
        ("GET", "/v1/operations/op-1", 200),
        ("GET", "/v1/operations/op-1", 200),
        ("GET", "/v1/operations/missing", 404),
        ("GET", "/v1/operations", 200),
    ]
    .map(|(m, p, s)| (m.to_owned(), p.to_owned(), s));
    assert_eq!(log, expected);
    let now = sim.state.now_ms();
    let at = stats["requests"][0]["atMs"].as_u64().unwrap();
    assert!(at <= now && now - at < 5_000);
}

#[tokio::test]
async fn admin_operations_can_be_adopted_finished_and_reset() {
    let sim = Sim::start().await;
    let body = json!({"durationSeconds": 0.3, "resource": "projects/p/things/x"});
    let (status, op) = sim.post("/sim/operations", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(op["name"], "operations/op-1");
    assert!(op.get("done").is_none());
    assert_eq!(
        op["metadata"]["resourceNames"],
        json!(["projects/p/things/x"])
    );
    assert_eq!(sim.stats().await["creates"], 0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, op) = sim.get("/v1/operations/op-1").await;
    assert_eq!(op["done"], true);
    assert_eq!(op["response"]["name"], "projects/p/things/x");

    sim.post("/sim/operations", json!({"durationSeconds": 3600}))
        .await;
    let (status, op) = sim
        .post("/sim/operations/op-2/finish", json!({"outcome": "error"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(op["error"]["code"], 9);
    assert_eq!(op["error"]["message"], "simulated failure");
    let (_, op) = sim.get("/v1/operations/op-2").await;
    assert_eq!(op["done"], true);
    assert_eq!(
        sim.stats().await["operations"]["operations/op-2"]["outcome"],
        "error"
    );
    let (status, _) = sim
        .post("/sim/operations/op-9/finish", json!({"outcome": "success"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = sim.post("/sim/reset", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let stats = sim.stats().await;
    assert_eq!(
        (stats["totalRequests"].clone(), stats["operations"].clone()),
        (json!(0), json!({}))
    );
    let (_, op) = sim.post("/v1/p/c", json!({})).await;
    assert_eq!(op["name"], "operations/op-1");
}

#[tokio::test]
async fn start_delay_creates_before_answering() {
    let sim = Sim::start().await;
    let slow = sim
        .http
        .post(format!("{}/v1/p/c?requestId=r1", sim.base))
        .json(&json!({"simulate": {"startDelayMs": 2000, "durationSeconds": 0}}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(slow.is_err(), "the client should time out");
    let (status, op) = sim.post("/v1/p/c?requestId=r1", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(op["name"], "operations/op-1");
    assert_eq!(op["done"], true);
    let stats = sim.stats().await;
    assert_eq!(
        (stats["creates"].clone(), stats["duplicateCreates"].clone()),
        (json!(1), json!(1))
    );
}

#[tokio::test]
async fn run_reports_bind_errors() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let err = run(SimArgs {
        listen,
        tls_cert: None,
        tls_key: None,
        tls_client_ca: None,
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, SimError::Bind { addr, .. } if addr == listen),
        "{err}"
    );
}
