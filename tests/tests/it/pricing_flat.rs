//! The pricing-flat plugin through the host: prices from its config table,
//! the minimum charge, malformed config and overflow as clear errors, and
//! fuel bounding a pricing call.

use infernet_host::runtime::manifest::{Package, PluginKind};
use infernet_host::runtime::{Limits, PluginError, Runtime};
use infernet_host::worlds::pricing::QuoteRequest;
use infernet_host::worlds::PricingPlugin;
use infernet_tests::*;
use std::collections::BTreeMap;

fn plugin(dir: &std::path::Path, config: &[(&str, &str)], limits: Limits) -> PricingPlugin {
    let pkg = pack_plugin("pricing-flat", PluginKind::Pricing, dir);
    let rt = Runtime::new(&dir.join("cache")).unwrap();
    let loaded = rt
        .load(&Package::open(&pkg, None).unwrap(), PluginKind::Pricing)
        .unwrap();
    let config: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    PricingPlugin::new(&rt, &loaded, limits, config).unwrap()
}

fn request(input: u32, output: u32, ms: u64) -> QuoteRequest {
    QuoteRequest {
        model: "m".into(),
        input_tokens: input,
        max_output_tokens: output,
        estimated_ms: ms,
        queue_depth: 0,
        load_permille: 0,
    }
}

#[test]
fn quotes_follow_the_config_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(
        dir.path(),
        &[
            ("per_input_token", "3"),
            ("per_output_token", "7"),
            ("per_second", "1000"),
            ("minimum", "50"),
        ],
        Limits::default(),
    );
    let q = p.quote(&request(10, 20, 1500)).unwrap();
    // 10*3 + 20*7 + ceil(1500*1000/1000) = 30 + 140 + 1500
    assert_eq!(q.price.amount, 1670);
    assert_eq!(q.price.currency, "USD");
    assert_eq!(
        q.breakdown.iter().map(|(_, v)| v).sum::<u64>(),
        q.price.amount
    );
    // tiny job: the minimum applies
    let q = p.quote(&request(1, 1, 0)).unwrap();
    assert_eq!(q.price.amount, 50);
    // deterministic
    assert_eq!(p.quote(&request(10, 20, 1500)).unwrap().price.amount, 1670);
}

#[test]
fn malformed_config_and_overflow_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(
        dir.path(),
        &[("per_input_token", "cheap")],
        Limits::default(),
    );
    let err = p.quote(&request(1, 1, 0)).unwrap_err();
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
    assert!(err.to_string().contains("per_input_token"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let p = plugin(
        dir.path(),
        &[("per_output_token", &u64::MAX.to_string())],
        Limits::default(),
    );
    let err = p.quote(&request(1, 2, 0)).unwrap_err();
    assert!(err.to_string().contains("overflow"), "{err}");
}

#[test]
fn fuel_bounds_a_pricing_call() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        fuel: 1_000,
        ..Limits::default()
    };
    let p = plugin(dir.path(), &[("per_input_token", "1")], limits);
    let err = p.quote(&request(1, 1, 0)).unwrap_err();
    assert!(
        matches!(err, PluginError::OutOfFuel { fuel: 1_000, .. }),
        "{err}"
    );
    // with the default budget the same plugin prices fine
    let dir = tempfile::tempdir().unwrap();
    let p = plugin(dir.path(), &[("per_input_token", "1")], Limits::default());
    assert_eq!(p.quote(&request(4, 0, 0)).unwrap().price.amount, 4);
}
