//! `GET /metrics` (`host/src/metrics.rs`, `host/src/api/metrics.rs`),
//! checked on networks other tests have already run jobs on (no network of
//! its own): after `openai_api`'s jobs, the client's over HTTP (bearer
//! key, content type, tokens, jobs, peers) and a provider's (plugin calls,
//! traps, kernel time, tokens generated, its jobs); after `network_payments`'
//! paid job, the escrowed and settled money. The page is parsed as
//! Prometheus would: every sample under a `# TYPE` of its family.

use infernet_host::sdk::Infernet;
use infernet_tests::postgrest::request;
use std::collections::BTreeMap;

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text format 0.0.4, asserting that every sample belongs to
/// a family declared with `# TYPE` (its name, or `_bucket`/`_sum`/`_count`
/// of a histogram) and that label values unescape.
fn parse(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            types.insert(name.into(), kind.into());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, mut rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => panic!("no value: {line}"),
        };
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            (labels, rest) = parse_labels_from(body, line);
        }
        let value: f64 = match rest.trim() {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE for {name}: {text}");
        out.push((name.to_string(), labels, value));
    }
    out
}

/// `k="v",k2="v2"}` and what follows the `}`.
fn parse_labels_from<'a>(mut body: &'a str, line: &str) -> (BTreeMap<String, String>, &'a str) {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(rest) = body.strip_prefix('}') {
            return (labels, rest);
        }
        body = body.strip_prefix(',').unwrap_or(body);
        let eq = body.find("=\"").expect(line);
        let key = body[..eq].to_string();
        let mut value = String::new();
        let mut it = body[eq + 2..].char_indices();
        let end = loop {
            match it.next().expect(line) {
                (i, '"') => break eq + 2 + i,
                (_, '\\') => match it.next().expect(line).1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key, value);
        body = &body[end + 1..];
    }
}

/// The sum of `name`'s samples whose labels include every `(k, v)` of `want`.
fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// `GET <url>/metrics` with `key` (if any): the parsed page and its text.
async fn scrape(url: &str, key: Option<&str>) -> (Vec<Sample>, String) {
    let url = format!("{url}/metrics");
    let auth = key.map(|k| format!("Bearer {k}"));
    let (status, headers, body) = tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        request("GET", &url, &headers, None)
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let ctype = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        ctype,
        Some(infernet_host::api::metrics::CONTENT_TYPE),
        "{headers:?}"
    );
    (parse(&body), body)
}

/// After `openai_api`'s jobs: the client's `/metrics` (served at `api`,
/// behind `key`) and the provider's registry as its `/metrics` renders
/// it. `report` is what the Python client saw (`usages`: the completed
/// text jobs).
pub async fn after_openai_jobs(
    api: &str,
    key: &str,
    client: &Infernet,
    provider: &Infernet,
    report: &serde_json::Value,
) {
    // Behind the API keys like every endpoint.
    let url = format!("{api}/metrics");
    let (status, _, body) = tokio::task::spawn_blocking(move || request("GET", &url, &[], None))
        .await
        .unwrap();
    assert_eq!(status, 401, "{body}");

    let usages = report["usages"].as_array().unwrap();
    let tokens: f64 = usages
        .iter()
        .map(|u| u["completion_tokens"].as_f64().unwrap())
        .sum();
    let (page, text) = scrape(api, Some(key)).await;
    let c = |name: &str, want: &[(&str, &str)]| sum(&page, name, want);
    assert!(
        c("infernet_tokens_generated_total", &[("role", "client")]) >= tokens,
        "client tokens < {tokens} the jobs produced:\n{text}"
    );
    assert!(
        c(
            "infernet_job_tokens_per_second_count",
            &[("role", "client"), ("model", "tiny-llama")]
        ) >= 1.0,
        "{text}"
    );
    let settled = client
        .jobs(500)
        .unwrap()
        .iter()
        .filter(|j| j.state == infernet_host::store::JobState::Settled)
        .count();
    assert!(settled >= usages.len(), "{settled} settled jobs");
    assert!(
        c("infernet_jobs", &[("role", "client"), ("state", "settled")]) >= usages.len() as f64,
        "{text}"
    );
    assert!(
        c("infernet_jobs", &[("role", "client"), ("state", "failed")]) >= 1.0,
        "the cancelled job: {text}"
    );
    assert!(c("infernet_connected_peers", &[]) >= 1.0, "{text}");

    // The provider's side, from its own registry (what its `/metrics`
    // serves with `node start --api`).
    let text = infernet_host::api::metrics::render(provider).await.unwrap();
    let page = parse(&text);
    let p = |name: &str, want: &[(&str, &str)]| sum(&page, name, want);
    for plugin in ["llama", "bert", "hostile"] {
        assert!(
            p(
                "infernet_plugin_calls_total",
                &[("plugin", plugin), ("world", "backend")]
            ) >= 2.0,
            "{plugin}: describe and at least one job:\n{text}"
        );
    }
    assert!(
        p("infernet_plugin_calls_total", &[("world", "pricing")]) >= usages.len() as f64,
        "a quote per job:\n{text}"
    );
    // The hostile backend traps on `attack=trap` (the Python client asks twice).
    assert!(
        p(
            "infernet_plugin_traps_total",
            &[("plugin", "hostile"), ("reason", "trap")]
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        p("infernet_plugin_traps_total", &[("plugin", "llama")]),
        0.0,
        "{text}"
    );
    assert!(
        p("infernet_kernel_seconds_total", &[("plugin", "llama")]) > 0.0,
        "{text}"
    );
    assert!(
        p("infernet_tokens_generated_total", &[("role", "provider")]) >= tokens,
        "the provider generated at least what the client got:\n{text}"
    );
    assert!(
        p("infernet_jobs", &[("role", "provider")]) >= usages.len() as f64,
        "{text}"
    );
    assert_eq!(
        p("infernet_jobs", &[("role", "client")]),
        0.0,
        "a provider that ran no client job: {text}"
    );
}

/// After `network_payments`' paid job of `price` micro-USD on `client`:
/// the escrowed and settled money, in decimal USD, and the payment
/// adapter's calls.
pub async fn after_paid_job(client: &Infernet, price: u64) {
    let text = infernet_host::api::metrics::render(client).await.unwrap();
    let page = parse(&text);
    let usd = price as f64 / 1e6;
    for name in ["infernet_escrowed_amount", "infernet_settled_amount"] {
        let got = sum(&page, name, &[("role", "client"), ("currency", "USD")]);
        assert!((got - usd).abs() < 1e-12, "{name} {got} != {usd}:\n{text}");
    }
    assert!(
        sum(
            &page,
            "infernet_plugin_calls_total",
            &[("world", "payment")]
        ) > 0.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &page,
            "infernet_jobs",
            &[("role", "client"), ("state", "settled")]
        ),
        1.0,
        "{text}"
    );
}

#[test]
fn the_parser_reads_escaped_labels_and_histograms() {
    let text = "# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\",y=\"2\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 2.5\nh_count 1\n\
                # TYPE g gauge\ng 4\n";
    let s = parse(text);
    assert_eq!(s.len(), 5);
    assert_eq!(s[0].1["x"], "q\"\\\n");
    assert_eq!(s[0].1["y"], "2");
    assert_eq!(sum(&s, "a_total", &[("y", "2")]), 3.0);
    assert_eq!(sum(&s, "h_sum", &[]), 2.5);
    assert_eq!(sum(&s, "g", &[]), 4.0);
}
