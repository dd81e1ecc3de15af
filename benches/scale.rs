//! The scale benchmark (issue 7): a dedicated control plane, the simulator and the operator
//! (release build), N operations across the protocols, and how close the operator comes to the
//! ideal; optionally a restart at half-time and a provider rate limit. Run it through
//! `hack/bench` (see `docs/benchmarks.md`); everything stays on loopback.
//!
//!     scale --bin PATH --sim PATH [--ops N] [--duration-dist uniform:30:120|fixed:S] [--dir DIR]
//!           [--initial S] [--max S] [--multiplier M] [--jitter J]
//!           [--mix google,redpanda,google-start,google-progress] [--rate-limit RPS[:BURST]]
//!           [--restart] [--concurrency N] [--list | --list-final] [--keep]

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use lro_operator::api::LongRunningOperation;
use lro_operator::reconcile::Schedule;
use lro_operator::reconcile::schedule::seed_of;
use lro_testkit::metrics::{counter_sum, histogram};
use lro_testkit::process::{leading_addr, proc_usage, run, wait_for_line};
use lro_testkit::unix_ms;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    bin: PathBuf,
    /// The simulator binary (`lro-sim`).
    sim: PathBuf,
    ops: usize,
    dist: Dist,
    dir: PathBuf,
    initial: f64,
    max: f64,
    multiplier: f64,
    jitter: f64,
    keep: bool,
    /// The kinds of operation, assigned round-robin.
    mix: Vec<Kind>,
    /// Each provider's `spec.rateLimit` (requests per second, burst).
    rate_limit: Option<(f64, u32)>,
    /// Kill the operator at half-time and start it again.
    restart: bool,
    /// The operator's `--concurrency`.
    concurrency: Option<u32>,
    /// The providers' `spec.list`: none (per-operation polls), running operations only, or
    /// every operation (final states come with the list).
    list: ListMode,
}

/// How the providers observe their operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListMode {
    /// One poll per operation (no `spec.list`).
    Off,
    /// `spec.list` of the running operations (google `done = false`, redpanda
    /// `filter.state=STATE_IN_PROGRESS`): one that leaves the list is read once.
    Running,
    /// `spec.list` of every operation: final states come with the pages.
    Final,
}

/// How an operation reaches the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// Adopts a simulator operation by name (`google` protocol, `GET /v1/operations/…`).
    GoogleAdopt,
    /// Adopts a simulator operation by id (`redpanda` protocol, `GET /redpanda/v1/operations/…`).
    RedpandaAdopt,
    /// Starts one with `spec.start` (`google` protocol, `POST /v1/projects/demo/clusters`).
    GoogleStart,
    /// Like `GoogleStart` (started, so its 0 % is known), an operation whose progress moves
    /// (`progressPercentage` every 10 %).
    GoogleProgress,
    /// Starts a Compute Engine insert and long-polls it (`compute` protocol with
    /// `compute.longPoll`: `POST …/operations/…/wait`). Each wait holds a worker: not in the
    /// default mix.
    ComputeLongPoll,
}

impl Kind {
    fn parse(s: &str) -> Result<Kind, Error> {
        match s {
            "google" => Ok(Kind::GoogleAdopt),
            "redpanda" => Ok(Kind::RedpandaAdopt),
            "google-start" => Ok(Kind::GoogleStart),
            "google-progress" => Ok(Kind::GoogleProgress),
            "compute-longpoll" => Ok(Kind::ComputeLongPoll),
            _ => Err(format!(
                "unknown kind {s:?} (google, redpanda, google-start, google-progress, compute-longpoll)"
            )
            .into()),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::GoogleAdopt => "google",
            Kind::RedpandaAdopt => "redpanda",
            Kind::GoogleStart => "google-start",
            Kind::GoogleProgress => "google-progress",
            Kind::ComputeLongPoll => "compute-longpoll",
        }
    }

    fn provider(self) -> &'static str {
        match self {
            Kind::GoogleAdopt | Kind::GoogleStart | Kind::GoogleProgress => "sim",
            Kind::RedpandaAdopt => "sim-redpanda",
            Kind::ComputeLongPoll => "sim-compute",
        }
    }
}

#[derive(Clone, Copy)]
enum Dist {
    Uniform(f64, f64),
    Fixed(f64),
}

impl Dist {
    fn parse(s: &str) -> Result<Dist, Error> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["uniform", a, b] => {
                let (a, b): (f64, f64) = (a.parse()?, b.parse()?);
                if !(0.0..=b).contains(&a) {
                    return Err("uniform:A:B needs 0 <= A <= B".into());
                }
                Ok(Dist::Uniform(a, b))
            }
            ["fixed", s] => Ok(Dist::Fixed(s.parse()?)),
            _ => Err(format!("unknown distribution {s:?} (uniform:A:B or fixed:S)").into()),
        }
    }

    fn max(self) -> f64 {
        match self {
            Dist::Uniform(_, b) => b,
            Dist::Fixed(s) => s,
        }
    }

    /// The i-th draw: deterministic (splitmix64 of i), so runs are comparable.
    fn draw(self, i: u64) -> f64 {
        match self {
            Dist::Fixed(s) => s,
            Dist::Uniform(a, b) => {
                let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let u = (z >> 11) as f64 / (1u64 << 53) as f64;
                ((a + u * (b - a)) * 10.0).round() / 10.0
            }
        }
    }

    fn describe(self) -> String {
        match self {
            Dist::Uniform(a, b) => format!("uniform {a}–{b} s"),
            Dist::Fixed(s) => format!("fixed {s} s"),
        }
    }
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        bin: PathBuf::new(),
        sim: PathBuf::new(),
        ops: 1000,
        dist: Dist::Uniform(30.0, 120.0),
        dir: std::env::temp_dir().join("lro-bench"),
        initial: 5.0,
        max: 30.0,
        multiplier: 1.5,
        jitter: 0.1,
        keep: false,
        mix: vec![
            Kind::GoogleAdopt,
            Kind::RedpandaAdopt,
            Kind::GoogleStart,
            Kind::GoogleProgress,
        ],
        rate_limit: None,
        restart: false,
        concurrency: None,
        list: ListMode::Off,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => args.bin = PathBuf::from(value()?),
            "--sim" => args.sim = PathBuf::from(value()?),
            "--ops" => args.ops = value()?.parse()?,
            "--duration-dist" => args.dist = Dist::parse(&value()?)?,
            "--dir" => args.dir = PathBuf::from(value()?),
            "--initial" => args.initial = value()?.parse()?,
            "--max" => args.max = value()?.parse()?,
            "--multiplier" => args.multiplier = value()?.parse()?,
            "--jitter" => args.jitter = value()?.parse()?,
            "--keep" => args.keep = true,
            "--mix" => {
                args.mix = value()?
                    .split(',')
                    .map(Kind::parse)
                    .collect::<Result<_, _>>()?
            }
            "--rate-limit" => {
                let v = value()?;
                let (rps, burst) = match v.split_once(':') {
                    Some((r, b)) => (r.parse::<f64>()?, b.parse::<u32>()?),
                    None => {
                        let r: f64 = v.parse()?;
                        (r, r.ceil().max(1.0) as u32)
                    }
                };
                args.rate_limit = Some((rps, burst));
            }
            "--restart" => args.restart = true,
            "--list" => args.list = ListMode::Running,
            "--list-final" => args.list = ListMode::Final,
            "--concurrency" => args.concurrency = Some(value()?.parse()?),
            // The workload of the side-by-side run with Crossplane provider-http (issue 15): 50
            // adopted Google operations of 60–180 s. Flags after it override it.
            "--profile" => match value()?.as_str() {
                "peer" => {
                    args.ops = 50;
                    args.dist = Dist::parse("uniform:60:180")?;
                    args.mix = vec![Kind::GoogleAdopt];
                }
                other => return Err(format!("unknown profile {other:?} (peer)").into()),
            },
            // `cargo bench` passes this to a harness-less bench.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if args.bin.as_os_str().is_empty() {
        return Err("--bin PATH (the release lro-operator) is required".into());
    }
    if args.sim.as_os_str().is_empty() {
        return Err("--sim PATH (the release lro-sim) is required".into());
    }
    if args.mix.is_empty() {
        return Err("--mix needs at least one kind".into());
    }
    if args.ops == 0 || args.ops > 20_000 {
        return Err("--ops must be in 1..=20000".into());
    }
    Ok(args)
}

fn log(msg: &str) {
    eprintln!("bench: {msg}");
}

/// What the watch saw of one operation.
#[derive(Default)]
struct Track {
    uid: String,
    last_status: Option<Value>,
    /// Status changes seen by the watch (each one is a status write).
    writes: u64,
    /// Distinct (phase, upstreamState, progress) triples.
    observations: HashSet<String>,
    /// `status.lastChangeAt` while Running (the schedule's origin), unix ms.
    running_since_ms: Option<u64>,
    ready_seen_ms: Option<u64>,
    /// `status.operation.name`: the upstream operation (for started ones, learnt from the start).
    handle: Option<String>,
}

fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let ts: jiff::Timestamp = s.parse().ok()?;
    u64::try_from(ts.as_millisecond()).ok()
}

fn is_ready(status: &Value) -> bool {
    status["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn record(tracks: &Mutex<HashMap<String, Track>>, obj: &LongRunningOperation) {
    let Some(name) = obj.metadata.name.clone() else {
        return;
    };
    let status = obj
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok());
    let mut tracks = tracks.lock().unwrap_or_else(|e| e.into_inner());
    let track = tracks.entry(name).or_default();
    if let Some(uid) = &obj.metadata.uid {
        track.uid.clone_from(uid);
    }
    let Some(status) = status else { return };
    if track.last_status.as_ref() == Some(&status) {
        return;
    }
    // The CRD defaults a new object's status to `{observedGeneration: -1}` at create: that is
    // the apiserver's, not a write of the operator's.
    if track.last_status.is_none()
        && status["phase"].is_null()
        && status["observedGeneration"] == -1
    {
        track.last_status = Some(status);
        return;
    }
    track.writes += 1;
    track.observations.insert(format!(
        "{}|{}|{}",
        status["phase"], status["upstreamState"], status["progress"]
    ));
    if status["phase"] == "Running"
        && let Some(ms) = status["lastChangeAt"].as_str().and_then(parse_rfc3339_ms)
    {
        track.running_since_ms = Some(ms);
    }
    if let Some(handle) = status["operation"]["name"].as_str() {
        track.handle = Some(handle.to_owned());
    }
    if track.ready_seen_ms.is_none() && is_ready(&status) {
        track.ready_seen_ms = Some(unix_ms());
    }
    track.last_status = Some(status);
}

/// The p-th percentile (nearest rank) of `v` (sorted in place).
fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn control_plane(root: &Path, verb: &str, dir: &Path) -> Result<String, Error> {
    run(Command::new(root.join("hack/control-plane"))
        .arg(verb)
        .arg("--dir")
        .arg(dir))
}

struct Procs {
    children: Vec<std::process::Child>,
}

/// The largest number of `times` (ms, sorted) within any `window_ms`.
fn busiest(times: &[u64], window_ms: u64) -> usize {
    (0..times.len())
        .map(|i| times[i..].partition_point(|t| *t < times[i] + window_ms))
        .max()
        .unwrap_or(0)
}

/// `lro_apiserver_requests_total` by `verb resource`, summed over the scrapes.
fn apiserver_requests(scrapes: &[&str]) -> Vec<(String, f64)> {
    let name = "lro_apiserver_requests_total{";
    let mut by: HashMap<String, f64> = HashMap::new();
    for text in scrapes {
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let label = |key: &str| {
                rest.split(&format!("{key}=\""))
                    .nth(1)
                    .and_then(|v| v.split('"').next())
                    .unwrap_or("?")
                    .to_owned()
            };
            if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *by.entry(format!("{} {}", label("verb"), label("resource")))
                    .or_default() += v;
            }
        }
    }
    let mut by: Vec<(String, f64)> = by.into_iter().collect();
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    by
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::main]
async fn main() {
    // Built and run by `cargo test --all-targets` or `cargo bench` too: without `--bin` (which
    // `hack/bench` always passes) there is nothing to do.
    if !std::env::args().any(|a| a == "--bin") {
        eprintln!("scale: run it through hack/bench (it needs --bin PATH); nothing to do");
        return;
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let result = bench(&args, &root).await;
    if !args.keep {
        log("tearing down the control plane");
        if let Err(e) = control_plane(&root, "down", &args.dir) {
            log(&format!("control-plane down: {e}"));
        }
    }
    if let Err(e) = result {
        eprintln!("bench: error: {e}");
        std::process::exit(1);
    }
}

/// Starts `lro-operator run` for the benchmark namespace; returns it with its pid and metrics URL.
async fn start_operator(
    args: &Args,
    kubeconfig: &Path,
    ns: &str,
    logs: &Path,
    run_name: &str,
) -> Result<(std::process::Child, u32, String), Error> {
    let op_log = logs.join(format!("{run_name}.log"));
    let stderr = logs.join(format!("{run_name}.stderr"));
    let mut command = Command::new(&args.bin);
    command
        .args(["run", "--namespace", ns, "--leader-elect=false"])
        .args(["--health-addr", "127.0.0.1:0"])
        // The simulator listens on loopback (a cluster admin's decision, as in the demo).
        .arg("--allow-private-networks");
    if let Some(c) = args.concurrency {
        command.args(["--concurrency", &c.to_string()]);
    }
    if args.mix.contains(&Kind::ComputeLongPoll) {
        // A wait is held up to the simulator's 20 s deadline: the request must outlast it.
        command.args(["--request-timeout", "60s"]);
    }
    // LRO_BENCH_OPERATOR_LOG: the operator's RUST_LOG (default info), for debugging a run.
    let filter = std::env::var("LRO_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info".into());
    let operator = command
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", filter)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&op_log)?)
        .stderr(File::create(&stderr)?)
        .spawn()?;
    let pid = operator.id();
    let health = wait_for_line(
        &[&op_log, &stderr],
        "health server listening on ",
        Duration::from_secs(30),
    )
    .await?;
    let health = format!("http://{}", leading_addr(&health));
    // Ready to work: the operations are listed and in its cache.
    wait_for_line(
        &[&op_log, &stderr],
        "caches synced",
        Duration::from_secs(300),
    )
    .await?;
    log(&format!("operator pid {pid}, metrics at {health}/metrics"));
    Ok((operator, pid, health))
}

/// The restart at half-time.
struct Restart {
    /// When the operator was killed (unix ms).
    killed_ms: u64,
    /// When the new one was started (unix ms).
    started_ms: u64,
    /// Seconds until the new one had its caches synced.
    ready_after: f64,
    /// The first run's last metrics scrape.
    metrics: String,
    /// The first run's (CPU seconds, peak RSS KiB).
    usage: Option<(f64, u64)>,
}

/// The operations of one kind, for the per-kind figures.
#[derive(Default)]
struct PerKind {
    gets: u64,
    ideal: u64,
    econ: Vec<f64>,
    /// Detection latencies (s).
    det: Vec<f64>,
}

async fn bench(args: &Args, root: &Path) -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let logs = args.dir.with_extension("logs");
    std::fs::create_dir_all(&logs)?;

    log(&format!("control plane in {}", args.dir.display()));
    let up = control_plane(root, "up", &args.dir)?;
    let kubeconfig = up
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("export KUBECONFIG="))
        .map(|p| PathBuf::from(p.trim_matches('\'')))
        .ok_or("unexpected output of control-plane up")?;
    let kubectl = |a: &[&str]| {
        run(Command::new("kubectl")
            .env("KUBECONFIG", &kubeconfig)
            .args(a))
    };
    let crds = root.join("crds/lro.dev.yaml");
    kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        crds.to_str().ok_or("path")?,
    ])?;
    kubectl(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=60s",
        "crd/longrunningoperations.lro.dev",
        "crd/operationproviders.lro.dev",
    ])?;
    let ns = format!("bench-{}", unix_ms());
    kubectl(&["create", "namespace", &ns])?;

    let mut procs = Procs {
        children: Vec::new(),
    };
    let sim_log = logs.join("sim.log");
    procs.children.push(
        Command::new(&args.sim)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(File::create(&sim_log)?)
            .stderr(File::create(logs.join("sim.stderr"))?)
            .spawn()?,
    );
    let sim_addr = leading_addr(
        &wait_for_line(
            &[&sim_log],
            "sim listening on http://",
            Duration::from_secs(30),
        )
        .await?,
    );
    let sim = format!("http://{sim_addr}");
    log(&format!("simulator at {sim}"));

    // One provider per protocol, with the same polling policy (and rate limit, if any).
    for (name, protocol, base) in [
        ("sim", "google", format!("{sim}/v1")),
        ("sim-redpanda", "redpanda", format!("{sim}/redpanda")),
        ("sim-compute", "compute", format!("{sim}/compute/v1")),
    ] {
        let mut provider = json!({
            "apiVersion": "lro.dev/v1alpha1",
            "kind": "OperationProvider",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "baseURL": base,
                "protocol": protocol,
                "polling": {
                    "initialInterval": format!("{}ms", (args.initial * 1000.0) as u64),
                    "maxInterval": format!("{}ms", (args.max * 1000.0) as u64),
                    "multiplier": args.multiplier,
                    "jitter": args.jitter,
                },
            },
        });
        if protocol == "compute" {
            provider["spec"]["compute"] =
                json!({"longPoll": true, "requestIdParameter": "requestId"});
        }
        if protocol == "google" {
            // The simulator's generic collections declare `requestId` (AIP-155).
            provider["spec"]["google"] = json!({"requestIdParameter": "requestId"});
        }
        if let Some((rps, burst)) = args.rate_limit {
            provider["spec"]["rateLimit"] = json!({"requestsPerSecond": rps, "burst": burst});
        }
        match (args.list, protocol) {
            (ListMode::Running, "google") => {
                provider["spec"]["list"] = json!({"query": {"filter": "done = false"}})
            }
            (ListMode::Running, "redpanda") => {
                provider["spec"]["list"] = json!({"query": {"filter.state": "STATE_IN_PROGRESS"}})
            }
            (ListMode::Final, "google" | "redpanda") => provider["spec"]["list"] = json!({}),
            _ => {}
        }
        let file = logs.join(format!("provider-{name}.json"));
        std::fs::write(&file, provider.to_string())?;
        kubectl(&["apply", "-f", file.to_str().ok_or("path")?])?;
    }

    let (operator, mut op_pid, mut health) =
        start_operator(args, &kubeconfig, &ns, &logs, "operator").await?;
    procs.children.push(operator);

    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?,
    )?;
    let lros: Api<LongRunningOperation> = Api::namespaced(client, &ns);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;

    // The watch, started before anything is created.
    let tracks: Arc<Mutex<HashMap<String, Track>>> = Arc::default();
    let watch = {
        let tracks = tracks.clone();
        let stream = watcher(lros.clone(), watcher::Config::default());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj))) => {
                        record(&tracks, &obj)
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("bench: watch error: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        })
    };

    // Upstream operations (for adopted ones), then the objects.
    let mix: Vec<&str> = args.mix.iter().map(|k| k.label()).collect();
    log(&format!(
        "creating {} operations ({}; {})",
        args.ops,
        args.dist.describe(),
        mix.join(", ")
    ));
    let created_at = Instant::now();
    let created_ms = unix_ms();
    let specs: Vec<(usize, f64, Kind)> = (0..args.ops)
        .map(|i| (i, args.dist.draw(i as u64), args.mix[i % args.mix.len()]))
        .collect();
    // (object name, upstream name if adopted, duration, kind)
    let names: Vec<(String, Option<String>, f64, Kind)> = futures::stream::iter(specs)
        .map(|(i, secs, kind)| {
            let (http, lros, sim) = (http.clone(), lros.clone(), sim.clone());
            async move {
                let mut script = json!({"durationSeconds": secs,
                                        "progress": kind == Kind::GoogleProgress});
                if kind == Kind::RedpandaAdopt {
                    // A Redpanda cluster creation: in Redpanda's list, not in Google's.
                    script["surface"] = json!("redpanda");
                }
                let (operation, upstream) = match kind {
                    Kind::GoogleStart | Kind::GoogleProgress | Kind::ComputeLongPoll => {
                        (None, None)
                    }
                    Kind::GoogleAdopt | Kind::RedpandaAdopt => {
                        let op: Value = http
                            .post(format!("{sim}/sim/operations"))
                            .json(&script)
                            .send()
                            .await?
                            .error_for_status()?
                            .json()
                            .await?;
                        let name = op["name"].as_str().ok_or("no name")?.to_owned();
                        let handle = match kind {
                            Kind::RedpandaAdopt => json!({
                                "id": name.trim_start_matches("operations/")
                            }),
                            _ => json!({"name": name}),
                        };
                        (Some(handle), Some(name))
                    }
                };
                let name = format!("op-{i:05}");
                let mut spec = json!({"providerRef": {"name": kind.provider()}});
                match operation {
                    Some(handle) => spec["operation"] = handle,
                    None if kind == Kind::ComputeLongPoll => {
                        spec["start"] = json!({
                            "path": "projects/demo/zones/z/instances",
                            "body": {"name": format!("vm-{i}"), "simulate": script},
                        })
                    }
                    None => {
                        spec["start"] = json!({
                            "path": "projects/demo/clusters",
                            "body": {"simulate": script},
                        })
                    }
                }
                let lro: LongRunningOperation = serde_json::from_value(json!({
                    "apiVersion": "lro.dev/v1alpha1",
                    "kind": "LongRunningOperation",
                    "metadata": {"name": name},
                    "spec": spec,
                }))?;
                lros.create(&PostParams::default(), &lro).await?;
                Ok::<_, Error>((name, upstream, secs, kind))
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let creation = created_at.elapsed().as_secs_f64();
    log(&format!("created in {creation:.1} s; waiting for Ready"));

    // Bounded: the longest operation, plus the creation time, plus a few max intervals.
    let deadline = Instant::now()
        + Duration::from_secs_f64(args.dist.max() + 5.0 * args.max + 120.0)
        + created_at.elapsed();
    let restart_at = created_at + Duration::from_secs_f64(args.dist.max() / 2.0);
    let mut restart: Option<Restart> = None;
    let mut last_report = Instant::now();
    loop {
        let ready = {
            let tracks = tracks.lock().unwrap_or_else(|e| e.into_inner());
            tracks
                .values()
                .filter(|t| t.ready_seen_ms.is_some())
                .count()
        };
        if ready >= args.ops {
            break;
        }
        if Instant::now() > deadline {
            log(&format!("deadline passed with {ready}/{} ready", args.ops));
            break;
        }
        if args.restart && restart.is_none() && Instant::now() >= restart_at {
            let metrics = http
                .get(format!("{health}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            std::fs::write(logs.join("metrics-before-restart.txt"), &metrics)?;
            let usage = proc_usage(op_pid);
            let first = procs.children.len() - 1;
            procs.children[first].kill()?;
            procs.children[first].wait()?;
            let killed_ms = unix_ms();
            log(&format!(
                "restart: killed the operator (SIGKILL) with {ready}/{} ready",
                args.ops
            ));
            let started = Instant::now();
            let started_ms = unix_ms();
            let (operator, pid, url) =
                start_operator(args, &kubeconfig, &ns, &logs, "operator-2").await?;
            procs.children.push(operator);
            (op_pid, health) = (pid, url);
            restart = Some(Restart {
                killed_ms,
                started_ms,
                ready_after: started.elapsed().as_secs_f64(),
                metrics,
                usage,
            });
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            log(&format!("{ready}/{} ready", args.ops));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wall = created_at.elapsed().as_secs_f64();
    // Let trailing writes (if any) arrive before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let usage = proc_usage(op_pid);
    let metrics = http
        .get(format!("{health}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    std::fs::write(logs.join("metrics.txt"), &metrics)?;
    let stats: Value = http
        .get(format!("{sim}/sim/stats"))
        .send()
        .await?
        .json()
        .await?;
    watch.abort();

    // Per-operation figures.
    let schedule = Schedule {
        initial: Duration::from_secs_f64(args.initial),
        max: Duration::from_secs_f64(args.max),
        multiplier: args.multiplier,
        jitter: args.jitter,
    };
    let tracks = tracks.lock().unwrap_or_else(|e| e.into_inner());
    let (mut req_econ, mut write_econ, mut det, mut det_rel) = (vec![], vec![], vec![], vec![]);
    let (mut gets_total, mut ideal_total, mut writes_total, mut obs_total) = (0u64, 0u64, 0, 0);
    let mut per_kind: HashMap<Kind, PerKind> = HashMap::new();
    // Upstream request times by provider (GETs, and the creates of started operations).
    let mut sent: HashMap<&str, Vec<u64>> = HashMap::new();
    // Restart: how late each operation's first poll after it came, against its schedule.
    let (mut resume_late, mut resume_after) = (vec![], vec![]);
    // Long-polled operations: (waits sent, the fewest possible, detection latency in s).
    let mut long_polled: Vec<(u64, u64, f64)> = Vec::new();
    // A started Compute operation is known to the simulator by its requestId (the object's uid).
    let by_request_id: HashMap<&str, &str> = stats["operations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, op)| Some((op["requestId"].as_str()?, name.as_str())))
        .collect();
    let mut missing = 0;
    for (name, upstream, _secs, kind) in &names {
        let Some(track) = tracks.get(name) else {
            missing += 1;
            continue;
        };
        let upstream = match kind {
            Kind::ComputeLongPoll => by_request_id.get(track.uid.as_str()).map(|n| n.to_string()),
            _ => upstream.clone().or(track.handle.clone()),
        };
        let Some(upstream) = upstream else {
            missing += 1;
            continue;
        };
        let op = &stats["operations"][&upstream];
        let times: Vec<u64> = op["getTimesMs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        let entry = sent.entry(kind.provider()).or_default();
        entry.extend(&times);
        if matches!(kind, Kind::GoogleStart | Kind::ComputeLongPoll)
            && let Some(at) = op["createdAtMs"].as_u64()
        {
            entry.push(at);
        }
        let (Some(done_ms), Some(gets)) = (op["doneAtMs"].as_u64(), op["gets"].as_u64()) else {
            missing += 1;
            continue;
        };
        let (Some(since), Some(seen)) = (track.running_since_ms, track.ready_seen_ms) else {
            if missing < 5 {
                log(&format!(
                    "not measured: {name}: Running seen {}, Ready seen {}, {} writes, \
                     observations {:?}, done at {done_ms}, created at {:?}",
                    track.running_since_ms.is_some(),
                    track.ready_seen_ms.is_some(),
                    track.writes,
                    track.observations,
                    op["createdAtMs"].as_u64(),
                ));
            }
            missing += 1;
            continue;
        };
        let obs = track.observations.len().max(1) as u64;
        write_econ.push(track.writes as f64 / obs as f64);
        writes_total += track.writes;
        obs_total += obs;
        if *kind == Kind::ComputeLongPoll {
            // Each wait answers when the operation is done or after the simulator's 20 s
            // deadline: one wait per started 20 s of its life is the fewest possible.
            let created = op["createdAtMs"].as_u64().unwrap_or(done_ms);
            let fewest = done_ms.saturating_sub(created).div_ceil(20_000).max(1);
            long_polled.push((gets, fewest, seen.saturating_sub(done_ms) as f64 / 1000.0));
            continue;
        }
        let seed = seed_of(&track.uid);
        // Point 0 is the change that set lastChangeAt: for an adopted operation the first poll
        // (which saw RUNNING), for a started one the start's answer. Then every point up to
        // done, then the one poll that sees done.
        let elapsed = done_ms.saturating_sub(since) as f64 / 1000.0;
        let ideal = match kind {
            Kind::GoogleStart | Kind::GoogleProgress => schedule.polls_within(elapsed, seed),
            _ => schedule.polls_within(elapsed, seed) + 1,
        };
        req_econ.push(gets as f64 / ideal as f64);
        gets_total += gets;
        ideal_total += ideal;
        let k = per_kind.entry(*kind).or_default();
        k.gets += gets;
        k.ideal += ideal;
        k.econ.push(gets as f64 / ideal as f64);
        let latency = seen.saturating_sub(done_ms) as f64 / 1000.0;
        let interval = args
            .max
            .min(args.initial + (args.multiplier - 1.0) * elapsed);
        det.push(latency);
        det_rel.push(latency / interval);
        k.det.push(latency);
        // Still running when the operator was killed: when did polling resume?
        if let Some(Restart {
            killed_ms: killed,
            started_ms: started,
            ..
        }) = &restart
            && done_ms > *killed
            && since < *killed
            && let Some(first) = times.iter().find(|t| **t >= *killed)
        {
            // A restart resumes at the schedule's next point after the new process first looks
            // at the operation: the first poll should sit on a schedule point (the latest one
            // before it), and come within one (jittered) interval of the new start.
            let at = first.saturating_sub(since) as f64 / 1000.0;
            let mut point = 0.0;
            loop {
                let next = schedule.next_after(point, seed);
                if next > at + 1e-9 {
                    break;
                }
                point = next;
            }
            resume_late.push(at - point);
            resume_after.push(first.saturating_sub(*started) as f64 / 1000.0);
        }
    }
    let measured = req_econ.len() + long_polled.len();

    println!();
    println!("## lro-operator scale benchmark");
    println!();
    println!(
        "operations: {} ({}; {}; progress only for google-progress); measured: {measured}; not measured: {missing}",
        args.ops,
        mix.join(", "),
        args.dist.describe()
    );
    println!(
        "policy: initialInterval {} s, maxInterval {} s, multiplier {}, jitter {}; rate limit: {}; \
         operator --concurrency {}",
        args.initial,
        args.max,
        args.multiplier,
        args.jitter,
        args.rate_limit
            .map(|(r, b)| format!("{r}/s, burst {b}, per provider"))
            .unwrap_or_else(|| "none".into()),
        args.concurrency
            .map_or("the default (128)".into(), |c| c.to_string()),
    );
    println!(
        "creation of the objects (and simulator operations): {creation:.1} s; \
         wall time from first create to last Ready: {wall:.1} s"
    );
    println!();
    println!(
        "request economy (sim GETs / ideal): mean {:.3}, p50 {:.3}, p99 {:.3}, max {:.3}; \
         total {gets_total} GETs / {ideal_total} ideal = {:.3}",
        mean(&req_econ),
        pct(&mut req_econ.clone(), 50.0),
        pct(&mut req_econ.clone(), 99.0),
        pct(&mut req_econ, 100.0),
        gets_total as f64 / ideal_total.max(1) as f64,
    );
    for kind in &args.mix {
        if let Some(k) = per_kind.get_mut(kind) {
            println!(
                "  {}: {} GETs / {} ideal = {:.3}, max {:.3} ({} operations, {:.2} GETs each; \
                 detection mean {:.2} s, p99 {:.2} s)",
                kind.label(),
                k.gets,
                k.ideal,
                k.gets as f64 / k.ideal.max(1) as f64,
                pct(&mut k.econ, 100.0),
                k.econ.len(),
                k.gets as f64 / k.econ.len().max(1) as f64,
                mean(&k.det),
                pct(&mut k.det.clone(), 99.0),
            );
        }
    }
    println!(
        "write economy (status writes seen / distinct observations): mean {:.3}, p99 {:.3}, \
         max {:.3}; total {writes_total} / {obs_total}",
        mean(&write_econ),
        pct(&mut write_econ.clone(), 99.0),
        pct(&mut write_econ, 100.0),
    );
    println!(
        "detection latency (Ready seen − sim done): mean {:.2} s, p50 {:.2} s, p99 {:.2} s, max {:.2} s; \
         ÷ interval: p50 {:.3}, p99 {:.3}, max {:.3}",
        mean(&det),
        pct(&mut det.clone(), 50.0),
        pct(&mut det.clone(), 99.0),
        pct(&mut det, 100.0),
        pct(&mut det_rel.clone(), 50.0),
        pct(&mut det_rel.clone(), 99.0),
        pct(&mut det_rel, 100.0),
    );
    if !long_polled.is_empty() {
        let waits: u64 = long_polled.iter().map(|l| l.0).sum();
        let fewest: u64 = long_polled.iter().map(|l| l.1).sum();
        let mut det: Vec<f64> = long_polled.iter().map(|l| l.2).collect();
        println!(
            "compute long-poll: {} operations, {waits} waits for at least {fewest} \
             ({:.3}); detection latency (Ready seen − done) p50 {:.3} s, p99 {:.3} s, max {:.3} s",
            long_polled.len(),
            waits as f64 / fewest.max(1) as f64,
            pct(&mut det.clone(), 50.0),
            pct(&mut det.clone(), 99.0),
            pct(&mut det, 100.0),
        );
    }
    let runs: Vec<(&str, &str)> = match &restart {
        Some(r) => vec![("before the restart", &r.metrics), ("after it", &metrics)],
        None => vec![("", &metrics)],
    };
    for (when, text) in &runs {
        match histogram(text, "lro_poll_lateness_seconds") {
            Some(h) => println!(
                "poll lateness{}{when} (operator histogram, bucket bounds): n {}, mean {:.3} s, \
                 p50 {}, p99 {}, max {}",
                if when.is_empty() { "" } else { " " },
                h.count,
                h.mean,
                h.p50,
                h.p99,
                h.max_bucket
            ),
            None => println!("poll lateness {when}: no samples in lro_poll_lateness_seconds"),
        }
    }
    let first_usage = restart.as_ref().and_then(|r| r.usage);
    match (usage, first_usage, restart.is_some()) {
        (Some((cpu, hwm)), first, restarted) => {
            let (cpu0, hwm0) = first.unwrap_or((0.0, 0));
            let total = cpu + cpu0;
            println!(
                "operator: {total:.2} CPU s over {wall:.0} s ({:.3} core average), peak RSS {:.1} MiB{}",
                total / wall.max(1.0),
                hwm.max(hwm0) as f64 / 1024.0,
                if restarted {
                    format!(
                        " (first run {cpu0:.2} s, {:.1} MiB; second {cpu:.2} s, {:.1} MiB)",
                        hwm0 as f64 / 1024.0,
                        hwm as f64 / 1024.0
                    )
                } else {
                    String::new()
                }
            )
        }
        (None, ..) => println!("operator: exited before it could be measured"),
    }
    let mut scrapes = vec![metrics.as_str()];
    if let Some(r) = &restart {
        scrapes.push(&r.metrics);
    }
    let writes: f64 = scrapes
        .iter()
        .filter_map(|t| counter_sum(t, "lro_status_writes_total"))
        .sum();
    println!("operator status writes (lro_status_writes_total): {writes}");
    let api = apiserver_requests(&scrapes);
    let api_total: f64 = api.iter().map(|(_, n)| n).sum();
    println!(
        "apiserver requests (lro_apiserver_requests_total): {api_total} in total, {:.2} per operation, {:.1}/s",
        api_total / args.ops as f64,
        api_total / wall.max(1.0)
    );
    for (what, n) in &api {
        println!("  {what}: {n}");
    }
    println!(
        "sim upstream requests in total: {}",
        stats["totalRequests"].as_u64().unwrap_or(0)
    );
    let lists = stats["lists"].as_u64().unwrap_or(0);
    let gets: u64 = stats["operations"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, op)| op["gets"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "observing requests ({}): {lists} list pages + {gets} GETs = {} ({:.2} per operation)",
        match args.list {
            ListMode::Off => "one poll per operation",
            ListMode::Running => "spec.list of the running operations",
            ListMode::Final => "spec.list of every operation",
        },
        lists + gets,
        (lists + gets) as f64 / args.ops as f64,
    );
    // Upstream rate: the busiest second and, with a limit, whether it held.
    for (provider, times) in &mut sent {
        times.sort_unstable();
        let relative: Vec<String> = times
            .iter()
            .map(|t| format!("{}", t.saturating_sub(created_ms)))
            .collect();
        std::fs::write(
            logs.join(format!("sent-{provider}.txt")),
            relative.join("\n"),
        )?;
        let peak = busiest(times, 1000);
        let span = (times.last().copied().unwrap_or(0) - times.first().copied().unwrap_or(0))
            as f64
            / 1000.0;
        let limit = args
            .rate_limit
            .map(|(r, b)| {
                let over = [1000u64, 5000, 30000]
                    .iter()
                    .filter(|w| busiest(times, **w) as f64 > b as f64 + r * **w as f64 / 1000.0)
                    .count();
                format!(
                    "; limit {r}/s burst {b}: {}",
                    if over == 0 {
                        "never exceeded (1 s, 5 s, 30 s windows)".to_owned()
                    } else {
                        format!("EXCEEDED in {over} of the 1 s, 5 s, 30 s windows")
                    }
                )
            })
            .unwrap_or_default();
        println!(
            "upstream requests to {provider}: {} over {span:.0} s ({:.1}/s average), busiest second {peak}{limit}",
            times.len(),
            times.len() as f64 / span.max(1.0)
        );
    }
    if let Some(Restart {
        killed_ms: killed,
        started_ms: started,
        ready_after,
        ..
    }) = &restart
    {
        // Every observing request: the GETs and the list pages.
        let list_times: Vec<u64> = stats["listTimesMs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        let mut all: Vec<u64> = sent.values().flatten().copied().collect();
        all.extend(&list_times);
        all.sort_unstable();
        let window = (args.max * 1000.0) as u64;
        let in_range = |from: u64, to: u64| -> Vec<u64> {
            all.iter()
                .copied()
                .filter(|t| (from..to).contains(t))
                .collect()
        };
        let before = in_range(killed.saturating_sub(window), *killed);
        let after = in_range(*started, started + window);
        println!(
            "restart: killed at {:.0} s, new operator started and its caches synced after {ready_after:.2} s; \
             upstream requests in the max interval before: {} (busiest second {}), \
             in the max interval after: {} (busiest second {})",
            killed.saturating_sub(created_ms) as f64 / 1000.0,
            before.len(),
            busiest(&before, 1000),
            after.len(),
            busiest(&after, 1000),
        );
        if args.list != ListMode::Off {
            // The first sweep after the new start: its pages come back to back (a gap over 1 s
            // ends it).
            let mut pages = list_times.iter().copied().filter(|t| t >= started);
            if let Some(first) = pages.next() {
                let (mut last, mut count) = (first, 1);
                for t in pages {
                    if t.saturating_sub(last) > 1000 {
                        break;
                    }
                    (last, count) = (t, count + 1);
                }
                println!(
                    "restart: the first sweep after the new start: {count} list pages, from {:.2} s \
                     to {:.2} s after the start ({} operations were running at the kill: at least \
                     {} pages of 100)",
                    first.saturating_sub(*started) as f64 / 1000.0,
                    last.saturating_sub(*started) as f64 / 1000.0,
                    resume_after.len(),
                    resume_after.len().div_ceil(100),
                );
            }
        }
        // Two jittered points can be up to (1 + 2 × jitter) max intervals apart.
        let bound = args.max * (1.0 + 2.0 * args.jitter) + ready_after;
        let within = resume_after.iter().filter(|a| **a <= bound).count();
        println!(
            "restart: {} operations were running; first poll after the new start: p50 {:.2} s, \
             max {:.2} s; {within} of them within the longest jittered gap plus the start-up \
             ({bound:.2} s); first poll after the schedule point it belongs to: p50 {:.3} s, \
             p99 {:.3} s, max {:.3} s",
            resume_after.len(),
            pct(&mut resume_after.clone(), 50.0),
            pct(&mut resume_after, 100.0),
            pct(&mut resume_late.clone(), 50.0),
            pct(&mut resume_late.clone(), 99.0),
            pct(&mut resume_late, 100.0),
        );
    }
    println!("logs: {}", logs.display());
    drop(procs);
    Ok(())
}
