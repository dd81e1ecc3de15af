//! Reading the operator's Prometheus metrics (OpenMetrics text), for the tests and the benchmark.

/// The value of every sample of `name` whose labels include all of `labels` (`key="value"`).
pub fn samples(text: &str, name: &str, labels: &[&str]) -> Vec<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let have: Vec<&str> = rest.split(',').collect();
            (metric == name && labels.iter().all(|l| have.contains(l)))
                .then(|| value.parse().ok())
                .flatten()
        })
        .collect()
}

/// Quantiles of a Prometheus histogram from its cumulative buckets (each answer is a bucket's
/// upper bound), plus its mean and count.
pub struct Hist {
    pub count: f64,
    pub mean: f64,
    pub p50: String,
    pub p99: String,
    pub max_bucket: String,
}

/// The histogram `name` of a scrape: quantiles from its cumulative buckets, mean and count.
pub fn histogram(text: &str, name: &str) -> Option<Hist> {
    let mut buckets: Vec<(String, f64)> = Vec::new();
    let (mut sum, mut count) = (0.0, 0.0);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{")) {
            let le = rest.split("le=\"").nth(1)?.split('"').next()?.to_owned();
            let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            buckets.push((le, v));
        } else if let Some(rest) = line.strip_prefix(&format!("{name}_sum")) {
            sum = rest.split_whitespace().last()?.parse().ok()?;
        } else if let Some(rest) = line.strip_prefix(&format!("{name}_count")) {
            count = rest.split_whitespace().last()?.parse().ok()?;
        }
    }
    if count == 0.0 {
        return None;
    }
    let q = |p: f64| {
        buckets
            .iter()
            .find(|(_, v)| *v >= p * count)
            .map(|(le, _)| format!("≤ {le} s"))
            .unwrap_or_else(|| "?".into())
    };
    let below_top = buckets
        .iter()
        .rev()
        .find(|(_, v)| *v < count)
        .map(|(le, _)| le.clone());
    let max_bucket = match below_top {
        None => q(0.0),
        Some(le) => {
            let next = buckets
                .iter()
                .skip_while(|(l, _)| *l != le)
                .nth(1)
                .map(|(l, _)| l.clone())
                .unwrap_or_else(|| "+Inf".into());
            format!("in ({le}, {next}] s")
        }
    };
    Some(Hist {
        count,
        mean: sum / count,
        p50: q(0.5),
        p99: q(0.99),
        max_bucket,
    })
}

/// The sum of every sample of the counter `name` in a scrape (`None`: no sample).
pub fn counter_sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        if line.starts_with(name)
            && line[name.len()..].starts_with(['{', ' '])
            && let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
        {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}
