//! Contract versions: plugins built against the frozen `infernet:plugin@0.1.0`
//! (`plugins/legacy-echo`, `plugins/legacy-pay`: raw wit-bindgen over
//! `wit/since_v0.1.0`, no SDK) run on this host through its 0.1.0 module,
//! which delegates to the newest; one built against the frozen 0.2.0
//! (`plugins/legacy-echo-020`) runs on the 0.2.4 module; a 0.2.4 plugin on a host that implements
//! only 0.1.0 is refused with both versions named; a 0.1.0 payment adapter
//! still gets what 0.1.0 promised it (config key `account`) and reports no
//! beneficiary, which 0.2.0 adds.

use infernet_host::config::Config;
use infernet_host::models::fixture::{write_llama_fixture, LlamaFixtureSpec};
use infernet_host::models::{ModelEntry, TokenizerRes};
use infernet_host::node::Node;
use infernet_host::runtime::{version, Limits, Package, PluginError, PluginKind, Runtime};
use infernet_host::store::Store;
use infernet_host::worlds::backend::{JobOutput, ProgressEvent};
use infernet_host::worlds::payment::{
    EscrowRequest, EscrowState, Money, PaymentGrants, PaymentPlugin,
};
use infernet_tests::{pack_plugin, write_backend_config};
use semver::Version;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

#[test]
fn a_backend_built_against_0_1_runs_a_job_on_this_host() {
    legacy_echo_runs_a_job("legacy-echo", "0.1.0", "0.1.0");
}

/// 0.2.1 to 0.2.4 only added (functions; the `qmatrix` resource; the
/// backend world's `config` and `wasi:http` imports; `attention`): a 0.2.0
/// component links against the 0.2.4 definitions (wasmtime's
/// semver-compatible names) and runs unchanged.
#[test]
fn a_backend_built_against_0_2_0_runs_a_job_on_a_0_2_4_host() {
    legacy_echo_runs_a_job("legacy-echo-020", "0.2.0", "0.2.4");
}

/// `plugin`, a build of `plugins/legacy-echo` against the frozen contract
/// `built`, loads, is served by the host module for `served`, and computes
/// what the host's own tokenizer and kernels say it must.
fn legacy_echo_runs_a_job(plugin: &str, built: &str, served: &str) {
    let dir = tempfile::tempdir().unwrap();
    let spec = LlamaFixtureSpec::tiny();
    let model = dir.path().join("tiny");
    write_llama_fixture(&spec, &model).unwrap();
    let pkg = pack_plugin(plugin, PluginKind::Backend, dir.path());
    let cfg = write_backend_config(dir.path(), &pkg, &[("tiny", &model)], "");
    let node = Node::from_config(&Config::load(&cfg).unwrap()).unwrap();

    let slot = &node.backends()[0];
    assert_eq!(slot.plugin.loaded.facts.wit_versions, [v(built)]);
    assert_eq!(slot.plugin.loaded.contract, v(served));
    assert!(
        slot.plugin
            .loaded
            .facts
            .imports
            .iter()
            .any(|i| *i == format!("infernet:plugin/tensor@{built}")),
        "{:?}",
        slot.plugin.loaded.facts.imports
    );
    assert_eq!(slot.info.name, plugin);

    let streamed = Arc::new(Mutex::new(String::new()));
    let sink = {
        let streamed = streamed.clone();
        Box::new(move |e: ProgressEvent| {
            if let ProgressEvent::Token(t) = e {
                streamed.lock().unwrap().push_str(&t);
            }
        })
    };
    let prompt = "the quick brown fox jumps";
    let out = node.generate("tiny", prompt, &[], Some(sink)).unwrap();

    // What it must have computed, from the model's own tokenizer on the host side.
    let entry = ModelEntry::open("tiny", &model, &candle_core::Device::Cpu).unwrap();
    let tok = TokenizerRes::of(entry.clone()).unwrap();
    let ids = tok.encode(prompt.to_string(), false).unwrap();
    assert!(!ids.is_empty());
    let sum: f32 = ids.iter().map(|&i| i as f32).sum();
    let decoded = tok.decode(&ids, true).unwrap();
    let JobOutput::Text(text) = &out.output else {
        panic!("expected text, got {:?}", out.output)
    };
    assert_eq!(
        text,
        &format!(
            "{decoded} | tokens={} sum={sum} embed={}x{}",
            ids.len(),
            spec.vocab_size,
            spec.hidden_size
        )
    );
    assert_eq!(*streamed.lock().unwrap(), decoded, "progress went through");
    assert_eq!(out.usage.input_tokens as usize, ids.len());

    // A 0.1.0 error value comes back converted, and the instance survives it.
    let err = node
        .generate("tiny", "", &[], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid-input") && err.contains("no tokens"),
        "{err}"
    );
    assert!(node.generate("tiny", prompt, &[], None).is_ok());
}

#[test]
fn a_0_2_plugin_on_a_host_that_implements_only_0_1_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let old_host = Runtime::with_contracts(&dir.path().join("cache"), &[v("0.1.0")]).unwrap();
    let echo = pack_plugin("echo", PluginKind::Backend, dir.path());
    let err = old_host
        .load(&Package::open(&echo, None).unwrap(), PluginKind::Backend)
        .err()
        .expect("a 0.1-only host must refuse a 0.2 plugin");
    assert!(matches!(err, PluginError::IncompatibleWit { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("targets infernet:plugin@0.2.4")
            && msg.contains("this host implements infernet:plugin@0.1.0;"),
        "{msg}"
    );
    // The same old host loads a 0.1.0 plugin; this host loads both.
    let legacy = pack_plugin("legacy-echo", PluginKind::Backend, dir.path());
    let loaded = old_host
        .load(&Package::open(&legacy, None).unwrap(), PluginKind::Backend)
        .unwrap();
    assert_eq!(loaded.contract, v("0.1.0"));
    let host = Runtime::new(&dir.path().join("cache2")).unwrap();
    assert_eq!(host.contracts(), version::contracts().as_slice());
    let loaded = host
        .load(&Package::open(&echo, None).unwrap(), PluginKind::Backend)
        .unwrap();
    assert_eq!(loaded.contract, v("0.2.4"));
    // A runtime cannot claim a contract it has no module for.
    let err = Runtime::with_contracts(&dir.path().join("c3"), &[v("0.3.0")])
        .err()
        .expect("no 0.3.0 module");
    assert!(err.to_string().contains("0.3.0"), "{err}");
}

fn legacy_pay(dir: &std::path::Path, account: &str) -> PaymentPlugin {
    let pkg = pack_plugin("legacy-pay", PluginKind::Payment, dir);
    let rt = Runtime::new(&dir.join("cache")).unwrap();
    let loaded = rt
        .load(&Package::open(&pkg, None).unwrap(), PluginKind::Payment)
        .unwrap();
    assert_eq!(loaded.contract, v("0.1.0"));
    let store = Arc::new(Store::open_in_dir(&dir.join("data")).unwrap());
    let grants = PaymentGrants {
        account: account.into(),
        allowed_hosts: vec![],
        config: BTreeMap::new(),
        secrets: BTreeMap::new(),
        generated: Default::default(),
        kv: store.plugin_kv("legacy-pay"),
    };
    PaymentPlugin::new(&rt, &loaded, Limits::default(), grants).unwrap()
}

#[test]
fn a_payment_adapter_built_against_0_1_settles_and_vouches_for_its_account() {
    let dir = tempfile::tempdir().unwrap();
    let pay = legacy_pay(dir.path(), "provider-acct");
    let currencies = pay.currencies().unwrap();
    assert_eq!(
        currencies
            .iter()
            .map(|c| (c.code.as_str(), c.decimals))
            .collect::<Vec<_>>(),
        [("USD", 6)]
    );
    let request = EscrowRequest {
        job_id: "job-1".into(),
        amount: Money {
            amount: 250,
            currency: "USD".into(),
        },
        depositor: "client-acct".into(),
        beneficiary: "provider-acct".into(),
        arbiter: None,
        expires_in_secs: 600,
        metadata: vec![],
    };
    let made = pay.create_escrow(&request).unwrap();
    assert_eq!(made.id, "legacy-job-1");
    assert_eq!(made.status, EscrowState::Funded);
    assert_eq!(
        (made.amount.amount, made.amount.currency.as_str()),
        (250, "USD")
    );
    assert_eq!(
        made.beneficiary, None,
        "a 0.1.0 escrow record has no beneficiary"
    );
    assert!(
        made.expires_at > 600,
        "expiry is a unix time: {}",
        made.expires_at
    );
    assert_eq!(pay.status(&made.id).unwrap(), made);
    assert_eq!(pay.release(&made.id).unwrap().status, EscrowState::Settled);
    let err = pay.refund(&made.id).unwrap_err().to_string();
    assert!(err.contains("settled"), "{err}");

    // An escrow it did not make: it answers only for the account the host
    // granted it (config key `account`, the 0.1.0 convention).
    let foreign = pay.status("ext:provider-acct:900").unwrap();
    assert_eq!(foreign.status, EscrowState::Funded);
    assert_eq!(foreign.amount.amount, 900);
    assert_eq!(
        foreign.deposit_address.as_deref(),
        Some("held-for:provider-acct")
    );
    assert_eq!(foreign.beneficiary, None);
    let err = pay.status("ext:someone-else:900").unwrap_err().to_string();
    assert!(
        err.contains("someone-else") && err.contains("provider-acct"),
        "{err}"
    );
}
