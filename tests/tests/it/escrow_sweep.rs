//! The client's escrow sweep (run at start and every 15 s; here by hand,
//! `escrow_sweep_secs = 0`, so nothing races the setup): what a dead or
//! failed run left behind is settled through the real ledger plugin —
//! a failed job's funded escrow is refunded (job `failed -> refunded`), an
//! intent row whose process died before the adapter call is finished and
//! refunded, an escrow past its expiry is expired by the adapter with the
//! money back, and an earlier attempt's escrow still held after the job
//! settled elsewhere is refunded. Balances are read from the ledger, not from the rows.

use infernet_host::config::Config;
use infernet_host::payments::ledger;
use infernet_host::runtime::PluginKind;
use infernet_host::sdk::Infernet;
use infernet_host::store::{EscrowKind, EscrowRecord, JobRole, JobState, JobUpdate, NewJob, Store};
use infernet_host::worlds::payment::{EscrowRequest, Money, PaymentPlugin};
use infernet_tests::pack_plugin;
use std::time::Duration;

const FUNDED: u64 = 1_000_000;

fn job(store: &Store, id: &str, path: &[JobState]) {
    store
        .jobs()
        .insert(&NewJob {
            id: id.into(),
            role: JobRole::Client,
            model: "echo".into(),
            request_hash: format!("hash-{id}"),
            request: None,
            client_peer: None,
            provider_peer: None,
        })
        .unwrap();
    let steps: Vec<(JobState, JobState, &str)> = path
        .windows(2)
        .map(|w| (w[0], w[1], "test setup"))
        .collect();
    store
        .jobs()
        .transition_path(id, &steps, &JobUpdate::default())
        .unwrap();
}

fn intent(id: &str, job_id: &str, me: &str, amount: u64, expires_in_ms: i64) -> EscrowRecord {
    let now = infernet_host::store::now_ms();
    EscrowRecord {
        id: id.into(),
        kind: EscrowKind::Pay,
        job_id: Some(job_id.into()),
        adapter: ledger::LEDGER.into(),
        escrow_id: None,
        amount,
        currency: "USD".into(),
        depositor: me.into(),
        beneficiary: "provider-x".into(),
        client_peer: None,
        provider_peer: Some("provider-x".into()),
        status: "creating".into(),
        confirmed_by: None,
        expires_at_ms: now + expires_in_ms,
        created_at_ms: now,
        updated_at_ms: now,
    }
}

/// Writes `row` and holds its amount in a ledger escrow expiring in
/// `expires_in_secs`, as a live client would have (row then `funded`).
fn hold(store: &Store, ledger: &PaymentPlugin, row: &EscrowRecord, expires_in_secs: u64) {
    store.escrows().insert_or_get(row).unwrap();
    let escrow = ledger
        .create_escrow(&EscrowRequest {
            job_id: row.id.clone(),
            amount: Money {
                amount: row.amount,
                currency: row.currency.clone(),
            },
            depositor: row.depositor.clone(),
            beneficiary: row.beneficiary.clone(),
            arbiter: None,
            expires_in_secs,
            metadata: vec![],
        })
        .unwrap();
    store
        .escrows()
        .update(&row.id, Some(&escrow.id), "funded")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_refunds_failed_jobs_finishes_dead_intents_and_expires_old_escrows() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let ledger_pkg = pack_plugin("payment-ledger", PluginKind::Payment, &root.join("plugins"));
    let config = root.join("client.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\nroles = [\"client\"]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\
             escrow_sweep_secs = 0\n\n[[payment]]\nplugin = {ledger_pkg:?}\n",
            root.join("client")
        ),
    )
    .unwrap();
    let node = Infernet::new(Config::load(&config).unwrap())
        .resume_unfinished(false)
        .start()
        .await
        .unwrap();
    let payments = node.payments().expect("the ledger is configured").clone();
    let wallet = payments.adapter(ledger::LEDGER).unwrap();
    let me = wallet.account.clone();
    let kv = wallet.plugin.kv().clone();
    ledger::fund(&kv, &me, "USD", FUNDED).unwrap();
    let store = node.store().clone();

    // A: failed job whose escrow is funded.
    job(
        &store,
        "A",
        &[JobState::Created, JobState::Quoted, JobState::Failed],
    );
    hold(
        &store,
        &wallet.plugin,
        &intent("A.1", "A", &me, 300, 3_600_000),
        3600,
    );
    // B: failed job whose process died between the intent row and the adapter call.
    job(
        &store,
        "B",
        &[JobState::Created, JobState::Quoted, JobState::Failed],
    );
    store
        .escrows()
        .insert_or_get(&intent("B.1", "B", &me, 500, 3_600_000))
        .unwrap();
    // C: a running job whose escrow expires in 1 s.
    job(
        &store,
        "C",
        &[
            JobState::Created,
            JobState::Quoted,
            JobState::Escrowed,
            JobState::Assigned,
            JobState::Running,
        ],
    );
    hold(
        &store,
        &wallet.plugin,
        &intent("C.0", "C", &me, 700, 1_000),
        1,
    );
    // D: settled on its second attempt, while the first attempt's escrow
    // (whose refund at failover failed) still holds 900.
    job(&store, "D", &[JobState::Created, JobState::Quoted]);
    let bump = JobUpdate {
        bump_attempts: true,
        ..JobUpdate::default()
    };
    store
        .jobs()
        .transition_with(
            "D",
            JobState::Quoted,
            JobState::Escrowed,
            "test setup",
            &bump,
        )
        .unwrap();
    store
        .jobs()
        .transition_with(
            "D",
            JobState::Escrowed,
            JobState::Assigned,
            "test setup",
            &bump,
        )
        .unwrap();
    store
        .jobs()
        .transition_path(
            "D",
            &[
                (JobState::Assigned, JobState::Running, "test setup"),
                (JobState::Running, JobState::Delivered, "test setup"),
                (JobState::Delivered, JobState::Settled, "test setup"),
            ],
            &JobUpdate::default(),
        )
        .unwrap();
    assert_eq!(store.jobs().get("D").unwrap().unwrap().attempts, 2);
    hold(
        &store,
        &wallet.plugin,
        &intent("D.1", "D", &me, 900, 3_600_000),
        3600,
    );
    assert_eq!(ledger::balance(&kv, &me, "USD").unwrap(), FUNDED - 1900);

    tokio::time::sleep(Duration::from_millis(1_300)).await;
    node.client().sweep().await.unwrap();

    let row = |id: &str| store.escrows().get(id).unwrap().unwrap();
    assert_eq!(row("A.1").status, "refunded");
    assert_eq!(
        store.jobs().get("A").unwrap().unwrap().state,
        JobState::Refunded
    );
    assert!(
        matches!(row("B.1").status.as_str(), "refunded" | "abandoned"),
        "{:?}",
        row("B.1")
    );
    assert_eq!(
        store.jobs().get("B").unwrap().unwrap().state,
        JobState::Refunded
    );
    assert_eq!(row("C.0").status, "expired");
    assert_eq!(
        row("D.1").status,
        "refunded",
        "a settled job's stale attempt"
    );
    assert_eq!(
        store.jobs().get("D").unwrap().unwrap().state,
        JobState::Settled
    );
    // Every micro-dollar is back, and nobody else was paid.
    assert_eq!(ledger::balance(&kv, &me, "USD").unwrap(), FUNDED);
    assert_eq!(ledger::balance(&kv, "provider-x", "USD").unwrap(), 0);
    assert!(store.escrows().open().unwrap().is_empty());
    // A second sweep changes nothing.
    assert_eq!(node.client().sweep().await.unwrap(), 0);
    assert_eq!(ledger::balance(&kv, &me, "USD").unwrap(), FUNDED);
    node.shutdown().await;
}
