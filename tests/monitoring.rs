//! The chart's monitoring (`monitoring.dashboard`, `monitoring.prometheusRule`): rendered with
//! `helm template`, every PromQL expression of the alerts and of the Grafana dashboard is parsed
//! (lightly: balanced brackets, known functions, durations), and every metric it names is checked
//! against the operator's `/metrics` — its name, its type (a counter only under `rate`/`increase`,
//! a bucket only under `histogram_quantile`, `le` kept by every aggregation in between), the
//! labels it is matched and grouped by, and the label values it is matched against.
//!
//! `/metrics` comes from the operator's own server (`telemetry::server::serve`, what
//! `lro-operator run` serves) twice: right after start, and after one of every kind of event the
//! metrics record (families with labels print nothing, not even `# TYPE`, until their first
//! series). The last test also scrapes the real operator binary after it completed an operation
//! against the simulator (a control plane: `LRO_E2E_KUBECONFIG`, else `hack/control-plane up`).
//!
//! Run with `cargo test --test monitoring`. Helm comes from `hack/build-tools helm`.

use lro_testkit as support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use lro_operator::api::Phase;
use lro_operator::telemetry::metrics::{
    CONTENT_TYPE, Metrics, RECONCILE_OUTCOMES, RequestKind, RequestOutcome, provider_label,
};
use lro_operator::telemetry::server::{self, Health};
use serde_json::{Value, json};
use support::helm::{CHART, Identity};
use support::{PROVIDER, TestEnv};

const RELEASE: &str = "rel";
const NAMESPACE: &str = "lro-system";
/// The metrics Service of release `rel`, which is also its targets' `job` label.
const JOB: &str = "rel-lro-operator-metrics";
const ALERTS: [&str; 5] = [
    "LroOperatorDown",
    "LroOperationsFailing",
    "LroUpstreamUnavailable",
    "LroRateLimitSaturated",
    "LroPollLate",
];
/// Labels Prometheus (with the Prometheus Operator's ServiceMonitor) puts on every scraped series.
const TARGET_LABELS: [&str; 7] = [
    "job",
    "namespace",
    "instance",
    "pod",
    "service",
    "endpoint",
    "container",
];
/// Series Prometheus makes itself for each target (not in `/metrics`).
const SYNTHETIC: [&str; 1] = ["up"];
const ENABLE_BOTH: [&str; 3] = [
    "--set=monitoring.dashboard.enabled=true",
    "--set=monitoring.prometheusRule.enabled=true",
    "--set=metrics.serviceMonitor.enabled=true",
];

// ---------------------------------------------------------------------------------- rendering

/// `helm template rel CHART -n lro-system ARGS…`, as objects.
async fn render(helm: &Identity, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", RELEASE, CHART, "-n", NAMESPACE];
    args.extend_from_slice(extra);
    let out = helm.helm(&args).await.assert_ok();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out.stdout)
        .unwrap_or_else(|e| panic!("the render is not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The ConfigMaps carrying the Grafana sidecar's label (`grafana_dashboard` unless changed).
fn dashboards<'a>(objects: &'a [Value], label: &str) -> Vec<&'a Value> {
    of_kind(objects, "ConfigMap")
        .into_iter()
        .filter(|c| !c["metadata"]["labels"][label].is_null())
        .collect()
}

#[track_caller]
fn one<'a>(found: Vec<&'a Value>, what: &str) -> &'a Value {
    assert_eq!(found.len(), 1, "expected one {what}, found {}", found.len());
    found[0]
}

/// Every alerting rule of a PrometheusRule.
fn alert_rules(rule: &Value) -> Vec<&Value> {
    rule["spec"]["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("PrometheusRule without groups: {rule}"))
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect()
}

/// The dashboard JSON a ConfigMap holds.
fn dashboard_json(config_map: &Value) -> Value {
    let text = config_map["data"]["lro-operator.json"]
        .as_str()
        .unwrap_or_else(|| panic!("no data.lro-operator.json in {config_map}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("the dashboard is not JSON: {e}"))
}

/// Every panel of a dashboard, those inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// `(where, PromQL)` for every query of the render: the alerts' `expr`s, the dashboard panels'
/// `targets[].expr`, and the selectors of its `label_values(…)` template variables.
fn queries(objects: &[Value]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rule in of_kind(objects, "PrometheusRule") {
        for r in alert_rules(rule) {
            let expr = r["expr"].as_str().unwrap_or_else(|| panic!("no expr: {r}"));
            out.push((format!("alert {}", r["alert"]), expr.to_owned()));
        }
    }
    for config_map in dashboards(objects, "grafana_dashboard") {
        let dashboard = dashboard_json(config_map);
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a target without expr in {}", panel["title"]));
                out.push((format!("panel {}", panel["title"]), expr.to_owned()));
            }
        }
        for var in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if var["type"] != "query" {
                continue;
            }
            let query = var["query"]["query"]
                .as_str()
                .or_else(|| var["query"].as_str())
                .unwrap_or_else(|| panic!("variable {} has no query", var["name"]));
            let (selector, label) = label_values(query).unwrap_or_else(|| {
                panic!("variable {}: not label_values(…): {query}", var["name"])
            });
            // The label a variable lists is grouped by, as in `count by (label) (selector)`.
            out.push((
                format!("variable {}", var["name"]),
                format!("count by ({label}) ({selector})"),
            ));
        }
    }
    out
}

/// `label_values(SELECTOR, LABEL)` split into its parts.
fn label_values(query: &str) -> Option<(&str, &str)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim(), label.trim()))
}

// ---------------------------------------------------------------------------------- /metrics

/// `GET /metrics` from the operator's own server serving `metrics`.
async fn scrape(metrics: Arc<Metrics>) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = server::serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics,
        Arc::new(Health::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot start the metrics server: {e}"));
    let url = format!("http://{}/metrics", server.local_addr());
    let response = reqwest::get(&url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    let content_type = response.headers().get("content-type").cloned();
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some(CONTENT_TYPE)
    );
    let text = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    server.shutdown().await;
    text
}

/// Records one of every event the metrics count, with every label value they can take: what a
/// working operator's `/metrics` shows once it has talked to an upstream and the API server.
fn exercise(metrics: &Metrics) {
    for outcome in RECONCILE_OUTCOMES {
        metrics.reconciled(outcome, Duration::from_millis(12));
    }
    let now = jiff::Timestamp::now();
    metrics.polled(Some(now), now);
    metrics.status_written();
    metrics.held_back_by_fair_share();
    for outcome in ["ok", "failed", "refused"] {
        metrics.swept(&provider_label(Some("team-a"), "cloud"), outcome);
    }
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        metrics.apiserver_request(verb, "longrunningoperations".into());
    }
    let provider = provider_label(Some("team-a"), "cloud");
    metrics.token_refreshed(&provider);
    metrics.rate_limit_waited(&provider, Duration::from_millis(250));
    let meter = metrics.upstream("google", provider);
    for kind in [
        RequestKind::Start,
        RequestKind::Poll,
        RequestKind::Cancel,
        RequestKind::List,
    ] {
        for outcome in [
            RequestOutcome::Ok,
            RequestOutcome::Http4xx,
            RequestOutcome::Http5xx,
            RequestOutcome::Throttled,
            RequestOutcome::Transport,
            RequestOutcome::Unreadable,
        ] {
            meter.record(kind, outcome, Duration::from_millis(30));
        }
    }
}

/// What a `/metrics` text says: the families (`# TYPE`) and, per sample name, its labels and
/// their values.
#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, String>,
    samples: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("bad TYPE line: {line}"));
                exposition.families.insert(name.into(), kind.into());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name, labels) = parse_sample(line);
            let entry = exposition.samples.entry(name).or_default();
            for (label, value) in labels {
                entry.entry(label).or_default().insert(value);
            }
        }
        exposition
    }

    /// The family of the PromQL series name `name`, with its type, and whether `name` is a name
    /// Prometheus stores for that type (`_total` for a counter; `_bucket`, `_sum`, `_count` for a
    /// histogram; the name itself for a gauge).
    fn family(&self, name: &str) -> Result<(String, String), String> {
        if let Some(kind) = self.families.get(name) {
            return match kind.as_str() {
                "gauge" | "unknown" => Ok((name.into(), kind.clone())),
                other => Err(format!(
                    "{name} is a {other} family: PromQL sees its samples ({})",
                    if other == "counter" {
                        "_total"
                    } else {
                        "_bucket, _sum, _count"
                    }
                )),
            };
        }
        let suffixes: [(&str, &[&str]); 5] = [
            ("_total", &["counter"]),
            ("_created", &["counter", "histogram"]),
            ("_bucket", &["histogram"]),
            ("_sum", &["histogram", "summary"]),
            ("_count", &["histogram", "summary"]),
        ];
        for (suffix, kinds) in suffixes {
            if let Some(base) = name.strip_suffix(suffix)
                && let Some(kind) = self.families.get(base)
            {
                return if kinds.contains(&kind.as_str()) {
                    Ok((base.into(), kind.clone()))
                } else {
                    Err(format!("{name}: {base} is a {kind}, which has no {suffix}"))
                };
            }
        }
        Err(format!("no family {name} (nor one it is a sample of)"))
    }
}

/// `name{a="x",b="y"} value …` → the name and the labels.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>) {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..end].to_owned();
    let mut labels = Vec::new();
    if line[end..].starts_with('{') {
        let mut chars = line[end + 1..].chars().peekable();
        loop {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            let key = key.trim_start_matches(',').trim().to_owned();
            if key.is_empty() || key.starts_with('}') {
                break;
            }
            assert_eq!(chars.next(), Some('"'), "bad label in {line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key, value));
            if chars.peek() == Some(&'}') {
                break;
            }
        }
    }
    (name, labels)
}

// ---------------------------------------------------------------------------------- PromQL

/// PromQL's functions (a space-separated list; see [`one_of`]).
const FUNCTIONS: &str = "abs absent absent_over_time avg_over_time ceil changes clamp \
    clamp_max clamp_min count_over_time day_of_month day_of_week days_in_month delta deriv \
    double_exponential_smoothing exp floor histogram_quantile holt_winters hour idelta increase \
    irate label_join label_replace last_over_time ln log10 log2 max_over_time min_over_time \
    minute month predict_linear present_over_time quantile_over_time rate resets round scalar \
    sgn sort sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time time timestamp \
    vector year";
/// PromQL's aggregation operators.
const AGGREGATIONS: &str =
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile";
/// Functions a counter (or a histogram's samples) may be passed to.
const COUNTER_FUNCTIONS: &str = "rate irate increase";
/// Range functions meant for gauges.
const GAUGE_RANGE_FUNCTIONS: &str = "delta idelta deriv changes predict_linear avg_over_time \
    min_over_time max_over_time sum_over_time count_over_time last_over_time present_over_time \
    quantile_over_time absent_over_time";

/// Whether `word` is in the space-separated `list`.
fn one_of(list: &str, word: &str) -> bool {
    list.split_whitespace().any(|w| w == word)
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Range(String),
    Op(String),
    Open(char),
    Close(char),
    Comma,
}

/// A Prometheus duration (`1h30m`: units largest first, each once) or a Grafana interval.
fn is_duration(s: &str) -> bool {
    if matches!(s, "$__rate_interval" | "$__interval" | "$__range") {
        return true;
    }
    const UNITS: [&str; 7] = ["y", "w", "d", "h", "ms", "m", "s"];
    // Order of size: ms is the smallest though it is tried before m.
    const RANK: [usize; 7] = [0, 1, 2, 3, 6, 4, 5];
    let mut rest = s;
    let mut last = None;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(i) = UNITS.iter().position(|u| rest.starts_with(u)) else {
            return false;
        };
        if last.is_some_and(|l| RANK[i] <= l) {
            return false;
        }
        last = Some(RANK[i]);
        rest = &rest[UNITS[i].len()..];
    }
    last.is_some()
}

fn lex(expr: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                // A Grafana variable stands for a value, never for a metric.
                toks.push(if c == '$' {
                    Tok::Num(word)
                } else {
                    Tok::Ident(word)
                });
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || (matches!(chars[i], '+' | '-') && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                toks.push(Tok::Num(chars[start..i].iter().collect()));
            }
            '"' | '\'' | '`' => {
                let mut value = String::new();
                i += 1;
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(format!("unterminated string in {expr}"));
                    };
                    i += 1;
                    if d == c {
                        break;
                    }
                    if d == '\\' && c != '`' {
                        value.extend(chars.get(i));
                        i += 1;
                    } else {
                        value.push(d);
                    }
                }
                toks.push(Tok::Str(value));
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|d| *d == ']')
                    .ok_or_else(|| format!("unclosed [ in {expr}"))?;
                let range: String = chars[i + 1..i + end].iter().collect();
                let (window, step) = range.split_once(':').unwrap_or((&range, ""));
                if !is_duration(window.trim()) || !(step.is_empty() || is_duration(step.trim())) {
                    return Err(format!("bad range [{range}] in {expr}"));
                }
                toks.push(Tok::Range(range));
                i += end + 1;
            }
            '(' | '{' => {
                toks.push(Tok::Open(c));
                i += 1;
            }
            ')' | '}' => {
                toks.push(Tok::Close(c));
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            _ => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                if ["==", "!=", "=~", "!~", "<=", ">="].contains(&two.as_str()) {
                    toks.push(Tok::Op(two));
                    i += 2;
                } else if "=<>+-*/%^".contains(c) {
                    toks.push(Tok::Op(c.to_string()));
                    i += 1;
                } else {
                    return Err(format!("unexpected {c:?} in {expr}"));
                }
            }
        }
    }
    Ok(toks)
}

/// A function or aggregation call (or plain parentheses: `func` empty) around a selector.
#[derive(Clone, Debug, Default)]
struct Frame {
    func: String,
    /// `by (…)` labels (`Some`), or `without (…)` (then `without` is set).
    by: Option<Vec<String>>,
    without: bool,
    /// The series names selected inside it.
    names: BTreeSet<String>,
}

#[derive(Clone, Debug)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
    range: Option<String>,
    /// The calls around it, outermost first.
    around: Vec<Frame>,
}

/// A PromQL expression, read: its selectors, its grouping clauses (labels and the series names
/// they group), and the syntax errors found.
#[derive(Debug, Default)]
struct Query {
    selectors: Vec<Selector>,
    groupings: Vec<(Vec<String>, BTreeSet<String>)>,
    errors: Vec<String>,
}

impl Query {
    fn parse(expr: &str) -> Query {
        let mut q = Query::default();
        let toks = match lex(expr) {
            Ok(t) => t,
            Err(e) => {
                q.errors.push(e);
                return q;
            }
        };
        let mut stack: Vec<Frame> = Vec::new();
        // An aggregation whose `by`/`without` comes before its parenthesis.
        let mut pending: Option<Frame> = None;
        let mut last_closed: Option<Frame> = None;
        let mut i = 0;
        while i < toks.len() {
            let next = toks.get(i + 1);
            match &toks[i] {
                Tok::Ident(w) if ["and", "or", "unless", "bool"].contains(&w.as_str()) => i += 1,
                Tok::Ident(w)
                    if [
                        "by",
                        "without",
                        "on",
                        "ignoring",
                        "group_left",
                        "group_right",
                    ]
                    .contains(&w.as_str()) =>
                {
                    let mut labels = Vec::new();
                    i += 1;
                    if toks.get(i) == Some(&Tok::Open('(')) {
                        i += 1;
                        loop {
                            match toks.get(i) {
                                Some(Tok::Ident(l)) => labels.push(l.clone()),
                                Some(Tok::Comma) => {}
                                Some(Tok::Close(')')) => break,
                                other => {
                                    q.errors.push(format!("{w} (…): unexpected {other:?}"));
                                    break;
                                }
                            }
                            i += 1;
                        }
                        i += 1;
                    } else if w == "by" || w == "without" {
                        q.errors.push(format!("{w} without a label list"));
                    }
                    match (w.as_str(), pending.as_mut()) {
                        ("by" | "without", Some(agg)) => {
                            agg.without = w == "without";
                            agg.by = Some(labels);
                        }
                        ("by" | "without", None) => match last_closed.take() {
                            // `sum(…) by (…)`
                            Some(agg) if one_of(AGGREGATIONS, &agg.func) => {
                                if w == "by" {
                                    q.groupings.push((labels, agg.names.clone()));
                                }
                            }
                            _ => q.errors.push(format!("{w} (…) follows no aggregation")),
                        },
                        // on/ignoring/group_*: label names of any series of the expression.
                        _ => q.groupings.push((labels, BTreeSet::new())),
                    }
                }
                Tok::Ident(w) if w == "offset" => match next {
                    Some(Tok::Num(d)) if is_duration(d) => i += 2,
                    other => {
                        q.errors.push(format!("offset followed by {other:?}"));
                        i += 1;
                    }
                },
                Tok::Ident(w) if one_of(AGGREGATIONS, w) => {
                    pending = Some(Frame {
                        func: w.clone(),
                        ..Frame::default()
                    });
                    i += 1;
                }
                Tok::Ident(w) if next == Some(&Tok::Open('(')) => {
                    if !one_of(FUNCTIONS, w) {
                        q.errors.push(format!("unknown function {w}"));
                    }
                    pending = Some(Frame {
                        func: w.clone(),
                        ..Frame::default()
                    });
                    i += 1;
                }
                Tok::Ident(name) => {
                    let mut selector = Selector {
                        name: name.clone(),
                        matchers: Vec::new(),
                        range: None,
                        around: stack.clone(),
                    };
                    i += 1;
                    if toks.get(i) == Some(&Tok::Open('{')) {
                        i += 1;
                        loop {
                            match (toks.get(i), toks.get(i + 1), toks.get(i + 2)) {
                                (Some(Tok::Close('}')), _, _) => break,
                                (Some(Tok::Comma), _, _) => i += 1,
                                (Some(Tok::Ident(l)), Some(Tok::Op(op)), Some(Tok::Str(v)))
                                    if ["=", "!=", "=~", "!~"].contains(&op.as_str()) =>
                                {
                                    selector.matchers.push((l.clone(), op.clone(), v.clone()));
                                    i += 3;
                                }
                                other => {
                                    q.errors.push(format!("bad matcher of {name}: {other:?}"));
                                    break;
                                }
                            }
                        }
                        i += 1;
                    }
                    if let Some(Tok::Range(r)) = toks.get(i) {
                        selector.range = Some(r.clone());
                        i += 1;
                    }
                    for frame in &mut stack {
                        frame.names.insert(name.clone());
                    }
                    q.selectors.push(selector);
                }
                Tok::Open('(') => {
                    stack.push(pending.take().unwrap_or_default());
                    i += 1;
                }
                Tok::Open(_) => {
                    q.errors
                        .push("a selector without a metric name ({…})".to_owned());
                    i += 1;
                }
                Tok::Close(')') => {
                    match stack.pop() {
                        Some(frame) => {
                            if let (Some(by), false) = (&frame.by, frame.without) {
                                q.groupings.push((by.clone(), frame.names.clone()));
                            }
                            last_closed = Some(frame);
                        }
                        None => q.errors.push("unbalanced )".to_owned()),
                    }
                    i += 1;
                    continue;
                }
                Tok::Close(c) => {
                    q.errors.push(format!("unbalanced {c}"));
                    i += 1;
                }
                Tok::Range(_) => {
                    // A subquery: `(…)[5m:1m]`.
                    if !matches!(toks.get(i.wrapping_sub(1)), Some(Tok::Close(')'))) {
                        q.errors
                            .push("a range after no selector or subquery".to_owned());
                    }
                    i += 1;
                }
                Tok::Str(_) | Tok::Num(_) | Tok::Op(_) | Tok::Comma => i += 1,
            }
            last_closed = None;
        }
        if !stack.is_empty() {
            q.errors.push(format!("{} unclosed (", stack.len()));
        }
        if pending.is_some() {
            q.errors
                .push("a function or aggregation without arguments".to_owned());
        }
        if q.selectors.is_empty() {
            q.errors.push("selects no series".to_owned());
        }
        q
    }

    /// The labels its result can carry (for `$labels.X` in annotations): its grouping labels, and
    /// the equality matchers of the series `absent(…)` makes.
    fn result_labels(&self) -> BTreeSet<String> {
        let mut labels: BTreeSet<String> = self
            .groupings
            .iter()
            .flat_map(|(l, _)| l.iter().cloned())
            .collect();
        for s in &self.selectors {
            if s.around.iter().any(|f| f.func == "absent") {
                labels.extend(
                    s.matchers
                        .iter()
                        .filter(|(_, op, _)| op == "=")
                        .map(|(l, _, _)| l.clone()),
                );
            }
        }
        labels
    }
}

/// What is wrong with `expr` against `used`, a scrape of an operator that has done some work
/// (families with labels print only once they have a series). `strict_values`: every label value
/// matched against must appear in `used`. `listing`: `expr` stands for a Grafana
/// `label_values(SELECTOR, LABEL)` (as `count by (LABEL) (SELECTOR)`), which reads any series
/// raw: no type checks.
fn problems(expr: &str, used: &Exposition, strict_values: bool, listing: bool) -> Vec<String> {
    let q = Query::parse(expr);
    let mut problems = q.errors.clone();
    let target: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
    // The labels of a series name (target labels included).
    let labels_of = |name: &str| -> BTreeSet<String> {
        let mut labels: BTreeSet<String> = target.iter().map(|l| (*l).to_owned()).collect();
        if let Some(seen) = used.samples.get(name) {
            labels.extend(seen.keys().cloned());
        }
        labels
    };
    for s in &q.selectors {
        let name = &s.name;
        let lro = name.starts_with("lro_")
            && name[4..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_');
        if !lro && !SYNTHETIC.contains(&name.as_str()) {
            problems.push(format!(
                "{name}: not a metric of the operator (lro_…) nor `up`"
            ));
            continue;
        }
        let innermost = s.around.iter().rev().find(|f| !f.func.is_empty());
        let func = innermost.map_or("", |f| f.func.as_str());
        if SYNTHETIC.contains(&name.as_str()) {
            for (label, _, _) in &s.matchers {
                if !target.contains(label.as_str()) {
                    problems.push(format!("{name}{{{label}=…}}: `up` has only target labels"));
                }
            }
            continue;
        }
        // Its family, registered at start or once used; the sample name must be served.
        let family = match used.family(name) {
            Ok(f) => f,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if !used.samples.contains_key(name) {
            problems.push(format!("{name}: family {} has no such series", family.0));
        }
        let kind = family.1.as_str();
        let sampled = kind == "counter" || kind == "histogram";
        match (&s.range, sampled) {
            _ if listing => {}
            (Some(_), true) if !one_of(COUNTER_FUNCTIONS, func) => problems.push(format!(
                "{name}[…]: a {kind}'s samples go to rate/irate/increase, not {func:?}"
            )),
            (None, true) => {
                problems.push(format!("{name}: a {kind}'s samples without rate/increase"))
            }
            (Some(_), false) if !one_of(GAUGE_RANGE_FUNCTIONS, func) => problems.push(format!(
                "{name}[…]: a {kind} under {func:?} (rate/increase are for counters)"
            )),
            _ => {}
        }
        // Buckets: under histogram_quantile, `le` kept by every aggregation in between.
        let quantile = s
            .around
            .iter()
            .rposition(|f| f.func == "histogram_quantile");
        match (name.ends_with("_bucket"), quantile) {
            (true, Some(at)) => {
                for f in &s.around[at + 1..] {
                    if !one_of(AGGREGATIONS, &f.func) {
                        continue;
                    }
                    let keeps = match (&f.by, f.without) {
                        (Some(labels), false) => labels.iter().any(|l| l == "le"),
                        (Some(labels), true) => !labels.iter().any(|l| l == "le"),
                        (None, _) => false,
                    };
                    if !keeps {
                        problems.push(format!(
                            "{name}: {} drops le before histogram_quantile",
                            f.func
                        ));
                    }
                }
            }
            (true, None) => problems.push(format!("{name}: a bucket outside histogram_quantile")),
            (false, Some(_)) => {
                problems.push(format!("{name}: not a bucket, under histogram_quantile"))
            }
            (false, None) => {}
        }
        // Matchers: labels the series has, values it takes.
        let labels = labels_of(name);
        for (label, op, value) in &s.matchers {
            if !labels.contains(label) {
                problems.push(format!(
                    "{name}{{{label}{op}…}}: {name} has no label {label}"
                ));
                continue;
            }
            let Some(seen) = used.samples.get(name).and_then(|m| m.get(label)) else {
                continue; // a target label: its values are the deployment's
            };
            if !strict_values || value.contains('$') {
                continue;
            }
            let wanted: Vec<&str> = if op.contains('~') {
                if !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|')
                {
                    continue; // a real regular expression: not checked
                }
                value.split('|').collect()
            } else {
                vec![value.as_str()]
            };
            for v in wanted {
                if !seen.contains(v) {
                    problems.push(format!(
                        "{name}{{{label}{op}{value:?}}}: {label} is never {v:?} (seen: {seen:?})"
                    ));
                }
            }
        }
    }
    // Grouping labels: carried by some series the aggregation (or the whole query) groups.
    let all_names: BTreeSet<String> = q.selectors.iter().map(|s| s.name.clone()).collect();
    for (labels, names) in &q.groupings {
        let names = if names.is_empty() { &all_names } else { names };
        let known: BTreeSet<String> = names.iter().flat_map(|n| labels_of(n)).collect();
        for label in labels {
            if !known.contains(label) {
                problems.push(format!("grouping by {label}: none of {names:?} has it"));
            }
        }
    }
    problems
}

/// Problems of every query of `objects`, one line each.
fn all_problems(objects: &[Value], used: &Exposition, strict_values: bool) -> Vec<String> {
    let queries = queries(objects);
    assert!(queries.len() > 20, "few queries found: {queries:?}");
    queries
        .iter()
        .flat_map(|(place, expr)| {
            problems(expr, used, strict_values, place.starts_with("variable"))
                .into_iter()
                .map(move |p| format!("{place}: {p}\n    in: {expr}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------- tests

#[tokio::test]
async fn monitoring_is_off_by_default_and_each_part_renders_alone() {
    let helm = Identity::offline(); // lint and template never contact a cluster
    let defaults = render(&helm, &[]).await;
    assert!(of_kind(&defaults, "PrometheusRule").is_empty());
    assert!(
        of_kind(&defaults, "ConfigMap").is_empty(),
        "no ConfigMap by default"
    );

    let dashboard_only = render(&helm, &["--set=monitoring.dashboard.enabled=true"]).await;
    assert!(of_kind(&dashboard_only, "PrometheusRule").is_empty());
    one(
        dashboards(&dashboard_only, "grafana_dashboard"),
        "dashboard ConfigMap",
    );

    let rule_only = render(&helm, &["--set=monitoring.prometheusRule.enabled=true"]).await;
    assert!(of_kind(&rule_only, "ConfigMap").is_empty());
    one(of_kind(&rule_only, "PrometheusRule"), "PrometheusRule");

    let both = render(&helm, &ENABLE_BOTH).await;
    one(of_kind(&both, "PrometheusRule"), "PrometheusRule");
    one(
        dashboards(&both, "grafana_dashboard"),
        "dashboard ConfigMap",
    );

    // Every alert off: no PrometheusRule (an empty group is no use).
    let mut all_off = vec!["--set=monitoring.prometheusRule.enabled=true".to_owned()];
    for alert in [
        "operatorDown",
        "operationsFailing",
        "upstreamUnavailable",
        "rateLimitSaturated",
        "pollLate",
    ] {
        all_off.push(format!(
            "--set=monitoring.prometheusRule.rules.{alert}.enabled=false"
        ));
    }
    let all_off: Vec<&str> = all_off.iter().map(String::as_str).collect();
    assert!(of_kind(&render(&helm, &all_off).await, "PrometheusRule").is_empty());

    // Without the metrics Service there is no default job to watch: the chart asks for one.
    let no_service = [
        "template",
        RELEASE,
        CHART,
        "--set=monitoring.prometheusRule.enabled=true",
        "--set=metrics.service.enabled=false",
    ];
    let out = helm.helm(&no_service).await;
    assert!(
        !out.success && out.stderr.contains("monitoring.prometheusRule.job"),
        "{out}"
    );
    let objects = render(
        &helm,
        &[
            "--set=monitoring.prometheusRule.enabled=true",
            "--set=metrics.service.enabled=false",
            "--set=monitoring.prometheusRule.job=kubernetes-pods",
        ],
    )
    .await;
    one(of_kind(&objects, "PrometheusRule"), "PrometheusRule");

    for sets in [vec![], ENABLE_BOTH.to_vec()] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend(sets);
        let out = helm.helm(&args).await.assert_ok();
        assert!(out.stdout.contains("0 chart(s) failed"), "{out}");
    }
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_name_is_served() {
    let helm = Identity::offline();
    let objects = render(&helm, &ENABLE_BOTH).await;

    let metrics = Arc::new(Metrics::new());
    let registered = Exposition::parse(&scrape(Arc::clone(&metrics)).await);
    exercise(&metrics);
    let used = Exposition::parse(&scrape(metrics).await);
    // Every family the first scrape shows is still there. The families keyed by labels that
    // have no series at start (no default label values) print nothing, not even `# TYPE`,
    // until their first series: a provider's first request, the first API server request.
    for (family, kind) in &registered.families {
        assert_eq!(used.families.get(family), Some(kind), "{family}");
    }
    let late: BTreeSet<&str> = used
        .families
        .keys()
        .filter(|f| !registered.families.contains_key(*f))
        .map(String::as_str)
        .collect();
    assert_eq!(
        late,
        BTreeSet::from([
            "lro_apiserver_requests",
            "lro_list_sweeps",
            "lro_rate_limit_wait_seconds",
            "lro_token_refreshes",
            "lro_upstream_request_duration_seconds",
            "lro_upstream_requests",
        ]),
        "the families absent from the first scrape"
    );

    let problems = all_problems(&objects, &used, true);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Everything the operator exports is on the dashboard.
    let named: BTreeSet<String> = queries(&objects)
        .iter()
        .flat_map(|(_, expr)| Query::parse(expr).selectors)
        .filter_map(|s| used.family(&s.name).ok().map(|f| f.0))
        .collect();
    let exported: BTreeSet<String> = used.families.keys().cloned().collect();
    assert_eq!(named, exported, "families used vs exported");
}

#[test]
fn the_checks_catch_wrong_queries() {
    let metrics = Metrics::new();
    exercise(&metrics);
    let used = Exposition::parse(&metrics.encode().unwrap());
    let ok = [
        r#"sum by (phase) (max by (namespace, job, phase) (lro_operations{job="j", phase="Failed"}))"#,
        r#"histogram_quantile(0.99, sum by (le) (rate(lro_poll_lateness_seconds_bucket[5m])))"#,
        r#"sum(rate(lro_upstream_requests_total{outcome=~"http_5xx|transport"}[$__rate_interval])) by (provider)"#,
        r#"absent(up{job="j"} == 1)"#,
        r#"lro_operations{phase="Failed"} - lro_operations{phase="Failed"} offset 15m > 0"#,
        r#"max_over_time(lro_operations[1h30m]) or vector(0)"#,
    ];
    for expr in ok {
        let p = problems(expr, &used, true, false);
        assert!(p.is_empty(), "{expr}: {p:?}");
    }
    let wrong = [
        ("lro_operation", "no family"),
        ("lro_reconciles", "counter family"),
        ("rate(lro_operations[5m])", "rate/increase are for counters"),
        ("lro_status_writes_total", "without rate"),
        (r#"lro_operations{state="Failed"}"#, "no label state"),
        (r#"lro_operations{phase="Broken"}"#, "never \"Broken\""),
        (
            r#"rate(lro_upstream_requests_total{outcome=~"ok|5xx"}[5m])"#,
            "never \"5xx\"",
        ),
        (
            "histogram_quantile(0.9, sum(rate(lro_poll_lateness_seconds_bucket[5m])))",
            "drops le",
        ),
        (
            "sum(rate(lro_poll_lateness_seconds_bucket[5m]))",
            "outside histogram_quantile",
        ),
        ("sum by (provider) (lro_operations)", "grouping by provider"),
        ("rates(lro_status_writes_total[5m])", "unknown function"),
        ("sum(rate(lro_status_writes_total[5m])", "unclosed"),
        ("rate(lro_status_writes_total[5 minutes])", "bad range"),
        ("rate(lro_status_writes_total[5m1h])", "bad range"),
        ("process_cpu_seconds_total", "not a metric of the operator"),
        (r#"up{phase="x"}"#, "only target labels"),
    ];
    for (expr, why) in wrong {
        let p = problems(expr, &used, true, false).join("; ");
        assert!(p.contains(why), "{expr}: expected {why:?}, got {p:?}");
    }
}

#[tokio::test]
async fn alerts_are_documented_and_follow_the_values() {
    let helm = Identity::offline();
    let objects = render(&helm, &ENABLE_BOTH).await;
    let rule = one(of_kind(&objects, "PrometheusRule"), "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
    let rules = alert_rules(rule);
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(names, ALERTS, "the alerts, in order");
    for r in &rules {
        let alert = &r["alert"];
        for key in ["summary", "description", "runbook"] {
            let text = r["annotations"][key].as_str().unwrap_or_default();
            assert!(
                text.trim().len() > 20,
                "{alert}: annotation {key} is {text:?}"
            );
        }
        assert!(
            r["annotations"]["runbook"]
                .as_str()
                .unwrap_or_default()
                .contains("kubectl"),
            "{alert}: the runbook says what to look at"
        );
        assert!(r["for"].as_str().is_some_and(is_duration), "{alert}: for");
        assert!(r["labels"]["severity"].is_string(), "{alert}: severity");
        // `$labels.X` in annotations: labels the alert's series carry.
        let expr = r["expr"].as_str().unwrap_or_default();
        let carried = Query::parse(expr).result_labels();
        for text in r["annotations"]
            .as_object()
            .into_iter()
            .flat_map(|a| a.values())
        {
            let text = text.as_str().unwrap_or_default();
            for part in text.split("$labels.").skip(1) {
                let label: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    carried.contains(&label),
                    "{alert}: $labels.{label}, but the expression keeps {carried:?}: {expr}"
                );
            }
        }
        // Only this release's targets.
        assert!(
            expr.contains(&format!(r#"job="{JOB}", namespace="{NAMESPACE}""#)),
            "{alert} selects its targets: {expr}"
        );
    }

    // Thresholds, windows, `for`, labels and switches come from the values.
    let objects = render(
        &helm,
        &[
            "--set=monitoring.prometheusRule.enabled=true",
            "--set=monitoring.prometheusRule.namespace=monitoring",
            "--set=monitoring.prometheusRule.additionalLabels.release=kube-prometheus-stack",
            "--set=monitoring.prometheusRule.alertLabels.team=platform",
            "--set=monitoring.prometheusRule.job=custom-job",
            "--set=monitoring.prometheusRule.rules.operatorDown.enabled=false",
            "--set=monitoring.prometheusRule.rules.operationsFailing.threshold=3",
            "--set=monitoring.prometheusRule.rules.operationsFailing.window=1h",
            "--set=monitoring.prometheusRule.rules.upstreamUnavailable.ratio=0.25",
            "--set=monitoring.prometheusRule.rules.upstreamUnavailable.outcomes=http_5xx|transport",
            "--set=monitoring.prometheusRule.rules.rateLimitSaturated.threshold=0.5",
            "--set=monitoring.prometheusRule.rules.rateLimitSaturated.severity=info",
            "--set=monitoring.prometheusRule.rules.pollLate.quantile=0.9",
            "--set=monitoring.prometheusRule.rules.pollLate.thresholdSeconds=42",
            "--set=monitoring.prometheusRule.rules.pollLate.window=20m",
            "--set=monitoring.prometheusRule.rules.pollLate.for=30m",
        ],
    )
    .await;
    let rule = one(of_kind(&objects, "PrometheusRule"), "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], "monitoring");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let rules = alert_rules(rule);
    let by_name: BTreeMap<&str, &Value> = rules
        .iter()
        .map(|r| (r["alert"].as_str().unwrap_or_default(), *r))
        .collect();
    assert!(!by_name.contains_key("LroOperatorDown"), "disabled");
    assert_eq!(by_name.len(), 4);
    for r in by_name.values() {
        assert_eq!(r["labels"]["team"], "platform");
        let expr = r["expr"].as_str().unwrap_or_default();
        assert!(
            expr.contains(r#"job="custom-job", namespace="lro-system""#),
            "{expr}"
        );
    }
    let expr = |alert: &str| {
        by_name[alert]["expr"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(expr("LroOperationsFailing").contains("offset 1h"));
    assert!(expr("LroOperationsFailing").trim_end().ends_with("> 3"));
    assert!(expr("LroUpstreamUnavailable").contains(r#"outcome=~"http_5xx|transport""#));
    assert!(
        expr("LroUpstreamUnavailable")
            .trim_end()
            .ends_with("> 0.25")
    );
    assert!(expr("LroRateLimitSaturated").trim_end().ends_with("> 0.5"));
    assert_eq!(
        by_name["LroRateLimitSaturated"]["labels"]["severity"],
        "info"
    );
    assert!(expr("LroPollLate").starts_with("histogram_quantile(0.9,"));
    assert!(expr("LroPollLate").contains("[20m]"));
    assert!(expr("LroPollLate").trim_end().ends_with("> 42"));
    assert_eq!(by_name["LroPollLate"]["for"], "30m");
}

#[tokio::test]
async fn operator_down_watches_the_service_monitor_job() {
    let helm = Identity::offline();
    let objects = render(&helm, &ENABLE_BOTH).await;
    // The ServiceMonitor sets no jobLabel, so Prometheus's job label is the Service's name.
    let monitor = one(of_kind(&objects, "ServiceMonitor"), "ServiceMonitor");
    assert!(monitor["spec"]["jobLabel"].is_null());
    let service = of_kind(&objects, "Service")
        .into_iter()
        .find(|s| {
            s["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == "http-metrics")
        })
        .unwrap_or_else(|| panic!("no metrics Service"));
    assert_eq!(service["metadata"]["name"], JOB);
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "selector {key}");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http-metrics");

    let rule = one(of_kind(&objects, "PrometheusRule"), "PrometheusRule");
    let down = alert_rules(rule)
        .into_iter()
        .find(|r| r["alert"] == "LroOperatorDown")
        .unwrap_or_else(|| panic!("no LroOperatorDown"));
    assert_eq!(
        down["expr"],
        format!(r#"absent(up{{job="{JOB}", namespace="{NAMESPACE}"}} == 1)"#)
    );
    assert_eq!(down["labels"]["severity"], "critical");
}

#[tokio::test]
async fn the_dashboard_is_a_grafana_dashboard_for_the_sidecar() {
    let helm = Identity::offline();
    let objects = render(&helm, &ENABLE_BOTH).await;
    let config_map = one(
        dashboards(&objects, "grafana_dashboard"),
        "dashboard ConfigMap",
    );
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(config_map["metadata"]["namespace"], NAMESPACE);
    let dashboard = dashboard_json(config_map);
    // The ConfigMap holds the chart's file as it is.
    let file = format!("{CHART}/dashboards/lro-operator.json");
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}")),
    )
    .unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
    assert_eq!(dashboard, stored);

    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].is_string());
    assert!(dashboard["panels"].is_array());
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .unwrap_or_else(|| panic!("no datasource variable"));
    assert_eq!(datasource["query"], "prometheus");
    let var = format!("${{{}}}", datasource["name"].as_str().unwrap_or_default());
    for v in &variables {
        if v["type"] == "query" {
            assert_eq!(
                v["datasource"]["uid"],
                var.as_str(),
                "variable {}",
                v["name"]
            );
        }
    }
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        assert!(
            ids.insert(panel["id"].to_string()),
            "panel id {} twice",
            panel["id"]
        );
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        if panel["type"] == "row" {
            continue;
        }
        titles.push(title.to_owned());
        assert_eq!(
            panel["datasource"]["uid"],
            var.as_str(),
            "{title}: datasource"
        );
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"],
                var.as_str(),
                "{title}: target datasource"
            );
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains(r#"namespace="$namespace""#) && expr.contains(r#"job=~"$job""#),
                "{title}: selects the chosen operator: {expr}"
            );
        }
    }
    for wanted in [
        "Operations by phase",
        "Upstream requests by protocol and outcome",
        "Upstream request duration p50 / p99",
        "Poll lateness",
        "Reconciles by outcome",
        "Reconcile errors",
        "Reconcile duration p50 / p99",
        "Status writes",
        "Token refreshes",
        "Rate-limit wait",
        "Fair share: requests held back",
        "API server requests by verb",
    ] {
        assert!(
            titles.iter().any(|t| t == wanted),
            "no panel {wanted}: {titles:?}"
        );
    }

    // The sidecar's label, the namespace and extra metadata are values.
    let objects = render(
        &helm,
        &[
            "--set=monitoring.dashboard.enabled=true",
            "--set=monitoring.dashboard.namespace=grafana",
            "--set=monitoring.dashboard.sidecarLabel=example.com/dashboard",
            "--set=monitoring.dashboard.sidecarLabelValue=lro",
            "--set=monitoring.dashboard.annotations.grafana_folder=LRO",
        ],
    )
    .await;
    let config_map = one(
        dashboards(&objects, "example.com/dashboard"),
        "dashboard ConfigMap",
    );
    assert_eq!(
        config_map["metadata"]["labels"]["example.com/dashboard"],
        "lro"
    );
    assert!(config_map["metadata"]["labels"]["grafana_dashboard"].is_null());
    assert_eq!(config_map["metadata"]["namespace"], "grafana");
    assert_eq!(
        config_map["metadata"]["annotations"]["grafana_folder"],
        "LRO"
    );
}

#[tokio::test]
async fn the_schema_rejects_invalid_monitoring_values() {
    let helm = Identity::offline();
    for (set, mentions) in [
        ("monitoring.dashboard.enabled=yes", "enabled"),
        (
            "monitoring.dashboard.sidecarLabel=not a label",
            "sidecarLabel",
        ),
        (
            "monitoring.dashboard.namespace=Not_A_Namespace",
            "namespace",
        ),
        ("monitoring.grafana=true", "grafana"),
        ("monitoring.prometheusRule.rules.pollLate.for=soon", "for"),
        (
            "monitoring.prometheusRule.rules.pollLate.window=1.5m",
            "window",
        ),
        (
            "monitoring.prometheusRule.rules.operatorDown.for=5m1h",
            "for",
        ),
        (
            "monitoring.prometheusRule.rules.pollLate.quantile=1.5",
            "quantile",
        ),
        (
            "monitoring.prometheusRule.rules.pollLate.thresholdSeconds=-1",
            "thresholdSeconds",
        ),
        (
            "monitoring.prometheusRule.rules.upstreamUnavailable.ratio=2",
            "ratio",
        ),
        (
            "monitoring.prometheusRule.rules.upstreamUnavailable.outcomes=5xx",
            "outcomes",
        ),
        (
            "monitoring.prometheusRule.rules.operatorDown.threshold=1",
            "threshold",
        ),
        (
            "monitoring.prometheusRule.rules.other.enabled=true",
            "other",
        ),
        ("monitoring.prometheusRule.alertLabels.bad-key=x", "bad-key"),
        (r#"monitoring.prometheusRule.job=a"b"#, "job"),
    ] {
        let out = helm.helm(&["template", "x", CHART, "--set", set]).await;
        assert!(!out.success, "--set {set} was accepted: {out}");
        assert!(
            out.stderr
                .contains("values don't meet the specifications of the schema")
                && out.stderr.contains(mentions),
            "--set {set}: not rejected by the schema, or without naming {mentions}: {out}"
        );
    }
    // Decimals from --set arrive as strings.
    for set in [
        "monitoring.prometheusRule.rules.upstreamUnavailable.ratio=0.3",
        "monitoring.prometheusRule.rules.pollLate.thresholdSeconds=2.5",
    ] {
        helm.helm(&["template", "x", CHART, "--set", set])
            .await
            .assert_ok();
    }
}

/// The real operator binary, after it completed an operation against the simulator: every
/// series the alerts and the dashboard name is in its `/metrics`.
#[tokio::test]
async fn a_running_operator_serves_every_metric_they_name() {
    let helm = Identity::offline();
    let objects = render(&helm, &ENABLE_BOTH).await;
    let env = TestEnv::new("monitoring").await;
    let manifest = json!({
        "apiVersion": "lro.dev/v1alpha1",
        "kind": "LongRunningOperation",
        "metadata": {"name": "watched"},
        "spec": {
            "providerRef": {"name": PROVIDER},
            "start": {
                "path": "projects/demo/clusters",
                "body": {"simulate": {"durationSeconds": 2}},
            },
        },
    });
    env.apply(&manifest.to_string()).await.assert_ok();
    // And one through a provider that lists its operations (`lro_list_sweeps_total`).
    env.provider(
        "listed",
        "google",
        "/v1",
        json!({"list": {}, "google": {"requestIdParameter": "requestId"},
               "polling": {"initialInterval": "500ms", "maxInterval": "2s"}}),
    )
    .await;
    let mut listed = manifest.clone();
    listed["metadata"]["name"] = json!("listed");
    listed["spec"]["providerRef"]["name"] = json!("listed");
    env.apply(&listed.to_string()).await.assert_ok();
    for name in ["watched", "listed"] {
        env.wait_phase(name, Phase::Succeeded, Duration::from_secs(60))
            .await;
    }
    // The cache may trail the status write by a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, text) = env.health_get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics:\n{text}");
        if text.contains(r#"lro_operations{phase="Succeeded"} 2"#)
            && text.contains("lro_poll_lateness_seconds_count")
            && text.contains("lro_list_sweeps_total")
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/metrics never showed the operation:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let used = Exposition::parse(&text);
    // Label values depend on what happened (no upstream errors here): names and labels only.
    let problems = all_problems(&objects, &used, false);
    assert!(
        problems.is_empty(),
        "{}\n/metrics:\n{text}",
        problems.join("\n")
    );
}
