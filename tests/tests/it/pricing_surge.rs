//! The pricing-surge plugin through the host: an idle provider quotes the
//! flat price, queue depth and load raise it, the multiplier is capped,
//! bad bounds and malformed config are clear errors, quotes are
//! deterministic and the breakdown always sums to the price.

use infernet_host::runtime::manifest::{Package, PluginKind};
use infernet_host::runtime::{Limits, PluginError, Runtime};
use infernet_host::worlds::pricing::{Quote, QuoteRequest};
use infernet_host::worlds::PricingPlugin;
use infernet_tests::*;
use std::collections::BTreeMap;

fn plugin_named(name: &str, dir: &std::path::Path, config: &[(&str, &str)]) -> PricingPlugin {
    let pkg = pack_plugin(name, PluginKind::Pricing, dir);
    let rt = Runtime::new(&dir.join("cache")).unwrap();
    let loaded = rt
        .load(&Package::open(&pkg, None).unwrap(), PluginKind::Pricing)
        .unwrap();
    let config: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    PricingPlugin::new(&rt, &loaded, Limits::default(), config).unwrap()
}

fn plugin(dir: &std::path::Path, config: &[(&str, &str)]) -> PricingPlugin {
    plugin_named("pricing-surge", dir, config)
}

fn request(input: u32, output: u32, ms: u64, queue: u32, load: u32) -> QuoteRequest {
    QuoteRequest {
        model: "m".into(),
        input_tokens: input,
        max_output_tokens: output,
        estimated_ms: ms,
        queue_depth: queue,
        load_permille: load,
    }
}

/// Base rates shared by the tests: 10 in, 20 out, 1.5 s cost 30 + 140 + 1500 = 1670.
const RATES: [(&str, &str); 4] = [
    ("per_input_token", "3"),
    ("per_output_token", "7"),
    ("per_second", "1000"),
    ("minimum", "50"),
];

fn with_rates<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    RATES.iter().chain(extra).copied().collect()
}

fn entry(q: &Quote, name: &str) -> u64 {
    q.breakdown
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no `{name}` in {:?}", q.breakdown))
        .1
}

/// Everything in a quote, comparable.
fn fields(q: &Quote) -> (u64, String, u32, Vec<(String, u64)>) {
    (
        q.price.amount,
        q.price.currency.clone(),
        q.valid_for_secs,
        q.breakdown.clone(),
    )
}

fn assert_sums(q: &Quote) {
    assert_eq!(
        q.breakdown.iter().map(|(_, v)| v).sum::<u64>(),
        q.price.amount,
        "breakdown {:?} does not sum to {}",
        q.breakdown,
        q.price.amount
    );
}

fn assert_invalid(err: &PluginError, needle: &str) {
    assert!(
        matches!(
            err,
            PluginError::Guest {
                kind: "invalid-input",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(needle), "{err}");
}

#[test]
fn idle_provider_quotes_the_flat_price() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_rates(&[
        ("surge_per_queued_job_permille", "100"),
        ("surge_at_full_load_permille", "1000"),
    ]);
    let surge = plugin(dir.path(), &config);
    let flat = plugin_named("pricing-flat", &dir.path().join("flat"), &RATES);
    for (i, o, ms) in [(10, 20, 1500), (1, 1, 0), (0, 0, 0), (1000, 500, 12_345)] {
        let s = surge.quote(&request(i, o, ms, 0, 0)).unwrap();
        let f = flat.quote(&request(i, o, ms, 0, 0)).unwrap();
        assert_eq!(fields(&s).0, fields(&f).0, "job ({i}, {o}, {ms})");
        assert_eq!(fields(&s).1, fields(&f).1);
        assert_eq!(s.valid_for_secs, f.valid_for_secs);
        assert_eq!(entry(&s, "surge"), 0);
        assert_sums(&s);
    }
    let q = surge.quote(&request(10, 20, 1500, 0, 0)).unwrap();
    assert_eq!(q.price.amount, 1670);
    assert_eq!(q.price.currency, "USD");
    assert_eq!(q.valid_for_secs, 60);
    // the minimum charge applies before the surge
    assert_eq!(
        surge.quote(&request(1, 1, 0, 0, 0)).unwrap().price.amount,
        50
    );
}

#[test]
fn price_rises_with_queue_depth_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_rates(&[
        ("surge_per_queued_job_permille", "100"),
        ("surge_at_full_load_permille", "1000"),
        ("max_multiplier_permille", "10000"),
    ]);
    let p = plugin(dir.path(), &config);
    let price = |queue, load| p.quote(&request(10, 20, 1500, queue, load)).unwrap();

    // queue: +10 % per queued job
    assert_eq!(price(1, 0).price.amount, 1837); // 1670 * 1.1
    assert_eq!(price(5, 0).price.amount, 2505); // 1670 * 1.5
                                                // load: linear up to +100 % at full load
    assert_eq!(price(0, 500).price.amount, 2505); // 1670 * 1.5
    assert_eq!(price(0, 1000).price.amount, 3340); // 1670 * 2
                                                   // both add up: 1 + 0.2 + 0.25
    assert_eq!(price(2, 250).price.amount, 2422); // ceil(1670 * 1.45) = ceil(2421.5)
                                                  // the final price rounds up: 1670 * 1.001 = 1671.67
    assert_eq!(price(0, 1).price.amount, 1672);

    // monotonic in both inputs
    let mut last = 0;
    for queue in 0..20 {
        let amount = price(queue, 0).price.amount;
        assert!(amount > last, "queue {queue}: {amount} <= {last}");
        last = amount;
    }
    let mut last = 0;
    for load in (0..=1000).step_by(50) {
        let amount = price(0, load).price.amount;
        assert!(amount > last, "load {load}: {amount} <= {last}");
        last = amount;
    }

    // the surge is its own breakdown entry on top of the base parts
    let q = price(5, 0);
    assert_eq!(entry(&q, "input"), 30);
    assert_eq!(entry(&q, "output"), 140);
    assert_eq!(entry(&q, "time"), 1500);
    assert_eq!(entry(&q, "minimum"), 0);
    assert_eq!(entry(&q, "surge"), 835);
    assert_sums(&q);

    // the minimum charge is surged too
    let q = p.quote(&request(1, 1, 0, 5, 0)).unwrap();
    assert_eq!(q.price.amount, 75);
    assert_eq!(entry(&q, "minimum"), 40);
    assert_eq!(entry(&q, "surge"), 25);
    assert_sums(&q);
}

#[test]
fn the_multiplier_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    // default cap: 3×
    let p = plugin(
        dir.path(),
        &with_rates(&[
            ("surge_per_queued_job_permille", "500"),
            ("surge_at_full_load_permille", "2000"),
        ]),
    );
    assert_eq!(
        p.quote(&request(10, 20, 1500, 2, 0)).unwrap().price.amount,
        3340
    ); // 2×
    for (queue, load) in [(4, 0), (100, 0), (u32::MAX, 0), (0, 1000), (3, 800)] {
        let q = p.quote(&request(10, 20, 1500, queue, load)).unwrap();
        assert_eq!(q.price.amount, 5010, "queue {queue}, load {load}"); // 3×
        assert_sums(&q);
    }
    // a load reported above 1000 permille is still capped
    assert_eq!(
        p.quote(&request(10, 20, 1500, 0, u32::MAX))
            .unwrap()
            .price
            .amount,
        5010
    );

    // configured cap: 1.25×
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(
        dir.path(),
        &with_rates(&[
            ("surge_per_queued_job_permille", "100"),
            ("max_multiplier_permille", "1250"),
        ]),
    );
    assert_eq!(
        p.quote(&request(10, 20, 1500, 2, 0)).unwrap().price.amount,
        2004
    ); // 1.2×
    assert_eq!(
        p.quote(&request(10, 20, 1500, 3, 0)).unwrap().price.amount,
        2088 // ceil(1670 * 1.25) = ceil(2087.5)
    );
    assert_eq!(
        p.quote(&request(10, 20, 1500, 1000, 1000))
            .unwrap()
            .price
            .amount,
        2088
    );

    // a cap of exactly 1× turns the surge off
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(
        dir.path(),
        &with_rates(&[
            ("surge_per_queued_job_permille", "100"),
            ("surge_at_full_load_permille", "1000"),
            ("max_multiplier_permille", "1000"),
        ]),
    );
    let q = p.quote(&request(10, 20, 1500, 50, 1000)).unwrap();
    assert_eq!(q.price.amount, 1670);
    assert_eq!(entry(&q, "surge"), 0);
}

#[test]
fn bounds_and_malformed_config_are_errors() {
    // a cap below 1× would lower prices
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(
        dir.path(),
        &with_rates(&[("max_multiplier_permille", "999")]),
    );
    let err = p.quote(&request(1, 1, 0, 0, 0)).unwrap_err();
    assert_invalid(&err, "max_multiplier_permille");
    assert!(err.to_string().contains("1000"), "{err}");

    for (key, value) in [
        ("max_multiplier_permille", "-1"),
        ("max_multiplier_permille", "3x"),
        ("surge_per_queued_job_permille", "-5"),
        ("surge_per_queued_job_permille", "1.5"),
        ("surge_at_full_load_permille", "lots"),
        ("per_input_token", "cheap"),
        ("minimum", ""),
        ("valid_for_secs", "99999999999"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let p = plugin(dir.path(), &with_rates(&[(key, value)]));
        let err = p.quote(&request(1, 1, 0, 0, 0)).unwrap_err();
        assert_invalid(&err, key);
    }

    let dir = tempfile::tempdir().unwrap();
    let p = plugin(dir.path(), &[("currency", "  ")]);
    assert_invalid(&p.quote(&request(1, 1, 0, 0, 0)).unwrap_err(), "currency");
}

#[test]
fn overflow_is_an_error() {
    // the base overflows
    let dir = tempfile::tempdir().unwrap();
    let max = u64::MAX.to_string();
    let p = plugin(dir.path(), &[("per_output_token", &max)]);
    assert_invalid(&p.quote(&request(1, 2, 0, 0, 0)).unwrap_err(), "overflow");
    // the base fits, the surged price does not
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(
        dir.path(),
        &[
            ("per_input_token", &max),
            ("surge_per_queued_job_permille", "1000"),
        ],
    );
    assert_eq!(
        p.quote(&request(1, 0, 0, 0, 0)).unwrap().price.amount,
        u64::MAX
    );
    let err = p.quote(&request(1, 0, 0, 1, 0)).unwrap_err();
    assert_invalid(&err, "overflow");
    assert!(err.to_string().contains("surge"), "{err}");
    // huge surge settings saturate into the cap instead of wrapping
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(
        dir.path(),
        &with_rates(&[
            ("surge_per_queued_job_permille", &max),
            ("surge_at_full_load_permille", &max),
            ("max_multiplier_permille", &max),
        ]),
    );
    assert_invalid(
        &p.quote(&request(10, 20, 1500, u32::MAX, 1000)).unwrap_err(),
        "overflow",
    );
}

#[test]
fn quotes_are_deterministic_and_breakdowns_sum() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_rates(&[
        ("surge_per_queued_job_permille", "37"),
        ("surge_at_full_load_permille", "1234"),
        ("max_multiplier_permille", "2500"),
        ("currency", "BTC"),
        ("valid_for_secs", "30"),
    ]);
    let p = plugin(dir.path(), &config);
    let again = plugin(&dir.path().join("again"), &config);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    for _ in 0..200 {
        let r = request(
            next(5000) as u32,
            next(5000) as u32,
            next(100_000),
            next(60) as u32,
            next(1200) as u32,
        );
        let q = p.quote(&r).unwrap();
        assert_eq!(q.price.currency, "BTC");
        assert_eq!(q.valid_for_secs, 30);
        assert_sums(&q);
        // same request, same quote: from the same instance and from a fresh one
        assert_eq!(fields(&p.quote(&r).unwrap()), fields(&q));
        assert_eq!(fields(&again.quote(&r).unwrap()), fields(&q));
        // never below the base, never above the cap
        let base: u64 = ["input", "output", "time", "minimum"]
            .iter()
            .map(|k| entry(&q, k))
            .sum();
        assert!(q.price.amount >= base);
        assert!(q.price.amount <= (base * 2500).div_ceil(1000));
    }
}
