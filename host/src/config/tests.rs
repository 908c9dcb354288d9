//! Config parsing and validation: every bad value names its key.

use super::*;

#[test]
fn proof_system_is_checked() {
    let base = "[[backend]]\nplugin='p'\n[[backend.models]]\nid='m'\npath='m'\n";
    let err = Config::parse(&format!("{base}proof = 'plonk'\n"), Path::new(".")).unwrap_err();
    assert!(
        err.to_string().contains("backend[0].models[0].proof")
            && err.to_string().contains("groth16"),
        "{err}"
    );
    let c = Config::parse(&format!("{base}proof = 'groth16'\n"), Path::new(".")).unwrap();
    assert_eq!(c.backend[0].models[0].proof.as_deref(), Some("groth16"));
    let c = Config::parse(base, Path::new(".")).unwrap();
    assert_eq!(c.backend[0].models[0].proof, None);
    // A key bundle: resolved against the config dir, only with `proof`.
    let c = Config::parse(
        &format!("{base}proof = 'groth16'\nproof_keys = 'keys/a.keys.json'\n"),
        Path::new("/etc/infernet"),
    )
    .unwrap();
    assert_eq!(
        c.backend[0].models[0].proof_keys.as_deref(),
        Some(Path::new("/etc/infernet/keys/a.keys.json"))
    );
    let err = Config::parse(&format!("{base}proof_keys = 'k.json'\n"), Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(err.contains("backend[0].models[0].proof_keys"), "{err}");
}

#[test]
fn proof_pins_are_checked_and_named() {
    let key = "ab".repeat(32);
    let c = Config::parse(
        &format!("[client.proof_pins.digits]\npublisher = '{key}'\n[client.proof_pins.other]\nvk_id = '{key}'\n"),
        Path::new("."),
    )
    .unwrap();
    assert_eq!(
        c.client.proof_pins["digits"].publisher.as_deref(),
        Some(key.as_str())
    );
    assert_eq!(
        c.client.proof_pins["other"].vk_id.as_deref(),
        Some(key.as_str())
    );
    for (text, needle) in [
        ("[client.proof_pins.digits]\n", "client.proof_pins.digits"),
        (
            "[client.proof_pins.digits]\npublisher = 'zz'\n",
            "client.proof_pins.digits.publisher",
        ),
        (
            "[client.proof_pins.digits]\nvk_id = 'abc'\n",
            "client.proof_pins.digits.vk_id",
        ),
        ("[client.proof_pins.digits]\nkey = 'abc'\n", "key"),
    ] {
        let err = Config::parse(text, Path::new(".")).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn names_the_bad_key() {
    let err = Config::parse(
        "[[backend]]\nplugin = \"x\"\n[backend.limits]\nmemory_mb = 0\n",
        Path::new("."),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("backend[0].limits.memory_mb"),
        "{err}"
    );
    let err = Config::parse("[node]\ndevise = \"cpu\"\n", Path::new(".")).unwrap_err();
    assert!(err.to_string().contains("devise"), "{err}");
    let err = Config::parse("[node]\ndevice = \"tpu\"\n", Path::new(".")).unwrap_err();
    assert!(err.to_string().contains("node.device"), "{err}");
}

#[test]
fn duplicate_model_ids_are_refused() {
    let text = "[[backend]]\nplugin='a'\n[[backend.models]]\nid='m'\npath='p'\n[[backend]]\nplugin='b'\n[[backend.models]]\nid='m'\npath='q'\n";
    let err = Config::parse(text, Path::new(".")).unwrap_err();
    assert!(err.to_string().contains("backend[1].models[0].id"), "{err}");
}

#[test]
fn layer_spans_are_checked_and_named() {
    let with = |model: &str| {
        Config::parse(
            &format!("[[backend]]\nplugin='a'\n[[backend.models]]\npath='p'\n{model}\n"),
            Path::new("."),
        )
    };
    for (model, want) in [
        ("id='m'\nlayers='3..1'", "not a span"),
        ("id='m'\nlayers='0-3'", "0..12"),
        ("id='m@0..1/2'", "must not contain `@`"),
        ("id='m'\nlayers='0..2'\nproof='groth16'", "not proved"),
    ] {
        let err = with(model).unwrap_err().to_string();
        assert!(
            err.contains("backend[0].models[0]") && err.contains(want),
            "{model}: {err}"
        );
    }
    let c = with("id='m'\nlayers='0..2'").unwrap();
    assert_eq!(c.backend[0].models[0].layers.as_deref(), Some("0..2"));
    // Two spans of one model on one node are two served ids; one span twice is not.
    let two = "[[backend]]\nplugin='a'\n[[backend.models]]\nid='m'\npath='p'\nlayers='0..2'\n[[backend.models]]\nid='m'\npath='p'\nlayers='2..4'\n";
    Config::parse(two, Path::new(".")).unwrap();
    let err = Config::parse(&two.replace("2..4", "0..2"), Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(err.contains("backend[0].models[1].id"), "{err}");
}

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let c = Config::parse(
        "[[backend]]\nplugin='p'\n[[backend.models]]\nid='m'\npath='m'\n",
        Path::new("/etc/inf"),
    )
    .unwrap();
    assert_eq!(c.backend[0].plugin, Path::new("/etc/inf/p"));
    assert_eq!(c.backend[0].models[0].path, Path::new("/etc/inf/m"));
}

#[test]
fn network_keys_are_checked_and_named() {
    let parse = |t: &str| Config::parse(t, Path::new(".")).unwrap_err().to_string();
    let err = parse("[node]\nlisten = [\"tcp:4001\"]\n");
    assert!(err.contains("node.listen[0]"), "{err}");
    let err = parse("[node]\nbootstrap = [\"/ip4/127.0.0.1/tcp/4001\"]\n");
    assert!(
        err.contains("node.bootstrap[0]") && err.contains("/p2p/"),
        "{err}"
    );
    let err = parse("[node]\nroles = [\"provider\"]\n");
    assert!(err.contains("node.roles"), "{err}");
    let err = parse("[node]\nroles = [\"miner\"]\n");
    assert!(err.contains("miner"), "{err}");
    let err = parse("[client]\nmax_attempts = 0\n");
    assert!(err.contains("client.max_attempts"), "{err}");
    let err = parse("[client.weights]\nprice = -1.0\n");
    assert!(err.contains("client.weights.price"), "{err}");
}

#[test]
fn roles_default_from_backends() {
    let c = Config::parse("", Path::new(".")).unwrap();
    assert_eq!(c.roles(), vec![Role::Client]);
    let c = Config::parse("[[backend]]\nplugin='p'\n", Path::new(".")).unwrap();
    assert_eq!(c.roles(), vec![Role::Provider, Role::Client]);
    let c = Config::parse(
        "[node]\nroles=['client']\n[[backend]]\nplugin='p'\n",
        Path::new("."),
    )
    .unwrap();
    assert_eq!(c.roles(), vec![Role::Client]);
}

#[test]
fn payment_keys_are_checked_and_named() {
    let parse = |t: &str| Config::parse(t, Path::new(".")).unwrap_err().to_string();
    let err = parse("[[payment]]\nplugin='p'\nconfirm='trust-me'\n");
    assert!(
        err.contains("payment[0].confirm") && err.contains("status"),
        "{err}"
    );
    let err = parse("[[payment]]\nplugin='p'\naccount=' '\n");
    assert!(err.contains("payment[0].account"), "{err}");
    let err = parse("[[payment]]\nplugin='p'\n[payment.config]\naccount='0xabc'\n");
    assert!(err.contains("payment[0].config.account"), "{err}");
    let err = parse("[[payment]]\nplugin='p'\nallowed_hosts=['https://x.io/api']\n");
    assert!(err.contains("payment[0].allowed_hosts[0]"), "{err}");
    let err = parse("[[payment]]\nplugin='p'\nsecret={a='B'}\n");
    assert!(err.contains("secret"), "{err}");
    let err = parse("[client]\npay_currency='DOGE'\n");
    assert!(
        err.contains("client.pay_currency") && err.contains("DOGE"),
        "{err}"
    );
    let err = parse("[client.rates]\nDOGE = 1\n");
    assert!(err.contains("client.rates.DOGE"), "{err}");
    let err = parse("[client]\nescrow_secs = 0\n");
    assert!(err.contains("client.escrow_secs"), "{err}");
    let c = Config::parse(
        "[[payment]]\nplugin='p'\nconfirm='client'\n[payment.secrets]\napi_key='ENV_KEY'\n[client.rates]\nETH = 2500000000\n",
        Path::new("/etc/inf"),
    )
    .unwrap();
    assert_eq!(c.payment[0].plugin, Path::new("/etc/inf/p"));
    assert_eq!(c.payment[0].secrets["api_key"], "ENV_KEY");
    assert_eq!(c.client.rates["ETH"], 2_500_000_000);
    assert_eq!(c.client.rate_source, RateSourceKind::Fixed);
}

#[test]
fn rate_source_keys_are_checked_and_named() {
    let parse = |t: &str| Config::parse(t, Path::new(".")).unwrap_err().to_string();
    let err = parse("[client]\nrate_source = 'oracle'\n");
    assert!(
        err.contains("rate_source") && err.contains("oracle"),
        "{err}"
    );
    let err = parse("[client]\nrate_source = 'file'\n");
    assert!(
        err.contains("client.rates_file") && err.contains("required"),
        "{err}"
    );
    let err = parse("[client]\nrates_file = 'r.json'\n");
    assert!(
        err.contains("client.rates_file") && err.contains("rate_source"),
        "{err}"
    );
    let err =
        parse("[client]\nrate_source = 'file'\nrates_file = 'r.json'\n[client.rates]\nETH = 1\n");
    assert!(err.contains("`client.rates`:"), "{err}");
    let c = Config::parse(
        "[client]\nrate_source = 'file'\nrates_file = 'r.json'\nrates_max_age_secs = 600\n",
        Path::new("/etc/inf"),
    )
    .unwrap();
    assert_eq!(c.client.rate_source, RateSourceKind::File);
    assert_eq!(
        c.client.rates_file.as_deref(),
        Some(Path::new("/etc/inf/r.json"))
    );
    assert_eq!(c.client.rates_max_age_secs, 600);
}

#[test]
fn verify_section_parses_and_names_bad_keys() {
    let parse = |t: &str| Config::parse(t, Path::new(".")).unwrap_err().to_string();
    let c = Config::parse("", Path::new(".")).unwrap();
    assert_eq!(c.verify.policy, VerifyPolicy::None);
    assert!(c.verify.referees.is_empty() && !c.verify.referee);
    let peer = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    let c = Config::parse(
        &format!("[verify]\npolicy = 'replicate(3)'\nreferees = ['{peer}']\nreferee = true\n"),
        Path::new("."),
    )
    .unwrap();
    assert_eq!(c.verify.policy, VerifyPolicy::Replicate(3));
    assert_eq!(c.verify.referees, vec![peer.clone()]);
    assert!(c.verify.referee);
    let c = Config::parse("[verify]\npolicy = 'spot-check(0.25)'\n", Path::new(".")).unwrap();
    assert_eq!(c.verify.policy, VerifyPolicy::SpotCheck(0.25));

    for bad in ["replicate(1)", "spot-check(2)", "trust-me"] {
        let err = parse(&format!("[verify]\npolicy = '{bad}'\n"));
        assert!(err.contains("verify.policy") && err.contains(bad), "{err}");
    }
    let err = parse("[verify]\nreferees = ['not-a-peer']\n");
    assert!(
        err.contains("verify.referees[0]") && err.contains("not-a-peer"),
        "{err}"
    );
    let err = parse(&format!("[verify]\nreferees = ['{peer}', '{peer}']\n"));
    assert!(err.contains("verify.referees[1]"), "{err}");
    let c = Config::parse(
        &format!("[verify]\nverifiers = ['{peer}']\n"),
        Path::new("."),
    )
    .unwrap();
    assert_eq!(c.verify.verifiers, vec![peer.clone()]);
    let err = parse("[verify]\nverifiers = ['nobody']\n");
    assert!(
        err.contains("verify.verifiers[0]") && err.contains("verifier's id"),
        "{err}"
    );
    let err = parse(&format!("[verify]\nverifiers = ['{peer}', '{peer}']\n"));
    assert!(
        err.contains("verify.verifiers[1]") && err.contains("twice"),
        "{err}"
    );
    let err = parse("[node]\nroles = ['verifier']\n");
    assert!(
        err.contains("node.roles") && err.contains("role `verifier` needs"),
        "{err}"
    );
    let err = parse("[verify]\nreferee = 'yes'\n");
    assert!(err.contains("referee"), "{err}");
    let err = parse("[verify]\nsample_seed = 7\n");
    assert!(err.contains("sample_seed"), "{err}");
}

#[test]
fn registry_is_checked_and_named() {
    let parse = |t: &str| Config::parse(&format!("[registry]\n{t}"), Path::new("."));
    let ok =
        parse("url = 'https://abcd.supabase.co'\nanon_key_env = 'SUPABASE_ANON_KEY'\n").unwrap();
    let r = ok.registry.unwrap();
    assert_eq!(
        (r.heartbeat_secs, r.ttl_secs, r.max_dial, r.register),
        (60, 300, 8, None)
    );
    assert!(Config::parse("", Path::new("."))
        .unwrap()
        .registry
        .is_none());
    for (text, key) in [
        ("url = 'ftp://x'\nanon_key_env = 'K'", "registry.url"),
        (
            "url = 'https://x.supabase.co/rest/v1'\nanon_key_env = 'K'",
            "registry.url",
        ),
        ("url = 'not a url'\nanon_key_env = 'K'", "registry.url"),
        (
            "url = 'https://x'\nanon_key_env = 'eyJhbGciOi.key.itself'",
            "registry.anon_key_env",
        ),
        (
            "url = 'https://x'\nanon_key_env = ''",
            "registry.anon_key_env",
        ),
        (
            "url = 'https://x'\nanon_key_env = 'K'\nheartbeat_secs = 1",
            "registry.heartbeat_secs",
        ),
        (
            "url = 'https://x'\nanon_key_env = 'K'\nheartbeat_secs = 60\nttl_secs = 60",
            "registry.ttl_secs",
        ),
        (
            "url = 'https://x'\nanon_key_env = 'K'\nmax_dial = 0",
            "registry.max_dial",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
    // The key itself has no place in the file.
    let err = parse("url = 'https://x'\nanon_key = 'eyJ'")
        .unwrap_err()
        .to_string();
    assert!(err.contains("anon_key"), "{err}");
}
