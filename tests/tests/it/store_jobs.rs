//! The node's SQLite store on a real file: migrations, the job state
//! machine, atomic transitions under contention, peers and quotes.

use infernet_host::store::{
    JobRole, JobState, JobUpdate, NewJob, QuoteRecord, Store, StoreError, MIGRATIONS,
};
use std::sync::{Arc, Barrier};
use std::time::Instant;

fn new_job(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        role: JobRole::Client,
        model: "tiny-llama".into(),
        request_hash: format!("hash-{id}"),
        request: Some(serde_json::json!({ "prompt": "hello", "max_tokens": 8 })),
        client_peer: None,
        provider_peer: None,
    }
}

#[test]
fn migrations_are_idempotent_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(dir.path()).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        MIGRATIONS.last().unwrap().version
    );
    assert_eq!(store.journal_mode().unwrap(), "wal");
    assert!(store.foreign_keys().unwrap());
    let applied = store.applied_migrations().unwrap();
    assert_eq!(applied.len(), MIGRATIONS.len());
    store.jobs().insert(&new_job("j1")).unwrap();
    drop(store);

    for _ in 0..3 {
        let store = Store::open_in_dir(dir.path()).unwrap();
        assert_eq!(
            store.applied_migrations().unwrap(),
            applied,
            "reopen must not re-run migrations"
        );
        let job = store
            .jobs()
            .get("j1")
            .unwrap()
            .expect("job survives reopen");
        assert_eq!(job.state, JobState::Created);
        assert_eq!(job.request.unwrap()["prompt"], "hello");
        assert!(store.foreign_keys().unwrap());
    }
}

#[test]
fn foreign_keys_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(dir.path()).unwrap();
    let q = QuoteRecord {
        id: "q1".into(),
        job_id: "no-such-job".into(),
        provider_peer: "p".into(),
        model: "m".into(),
        price: 10,
        currency: "USD".into(),
        breakdown: vec![],
        expires_at_ms: 0,
        accepted: false,
        created_at_ms: 0,
    };
    assert!(matches!(
        store.quotes().insert(&q),
        Err(StoreError::Sqlite(_))
    ));
}

#[test]
fn happy_path_is_logged_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(dir.path()).unwrap();
    let jobs = store.jobs();
    jobs.insert(&new_job("j")).unwrap();
    let quote = QuoteRecord {
        id: "q".into(),
        job_id: "j".into(),
        provider_peer: "12D3KooWprovider".into(),
        model: "tiny-llama".into(),
        price: 42,
        currency: "USD".into(),
        breakdown: vec![("input".into(), 2), ("output".into(), 40)],
        expires_at_ms: 1_000,
        accepted: false,
        created_at_ms: 1,
    };
    store.quotes().insert(&quote).unwrap();
    store.quotes().accept("j", "q").unwrap();
    assert!(store.quotes().get("q").unwrap().unwrap().accepted);
    let path = [
        JobState::Created,
        JobState::Quoted,
        JobState::Escrowed,
        JobState::Assigned,
        JobState::Running,
        JobState::Delivered,
        JobState::Verified,
        JobState::Settled,
    ];
    for w in path.windows(2) {
        let update = match w[1] {
            JobState::Quoted => JobUpdate {
                quote_id: Some("q".into()),
                ..Default::default()
            },
            JobState::Assigned => JobUpdate {
                provider_peer: Some("12D3KooWprovider".into()),
                bump_attempts: true,
                ..Default::default()
            },
            JobState::Delivered => JobUpdate {
                result: Some(serde_json::json!({ "text": "hi" })),
                ..Default::default()
            },
            _ => JobUpdate::default(),
        };
        jobs.transition_with("j", w[0], w[1], &format!("to {}", w[1]), &update)
            .unwrap();
    }
    let job = jobs.get("j").unwrap().unwrap();
    assert_eq!(job.state, JobState::Settled);
    assert_eq!(job.quote_id.as_deref(), Some("q"));
    assert_eq!(job.provider_peer.as_deref(), Some("12D3KooWprovider"));
    assert_eq!(job.attempts, 1);
    assert_eq!(job.result.unwrap()["text"], "hi");
    let events = jobs.events("j").unwrap();
    assert_eq!(events.len(), path.len());
    assert_eq!(events[0].from, None);
    for (e, w) in events[1..].iter().zip(path.windows(2)) {
        assert_eq!((e.from, e.to), (Some(w[0]), w[1]));
    }
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(jobs.active().unwrap().is_empty());
}

#[test]
fn illegal_transitions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(dir.path()).unwrap();
    let jobs = store.jobs();
    jobs.insert(&new_job("j")).unwrap();

    // Not in the table.
    let err = jobs
        .transition("j", JobState::Created, JobState::Running, "skip ahead")
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::IllegalTransition {
                from: JobState::Created,
                to: JobState::Running,
                ..
            }
        ),
        "{err}"
    );
    // Legal edge, wrong current state.
    let err = jobs
        .transition("j", JobState::Quoted, JobState::Escrowed, "")
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::StateConflict {
                expected: JobState::Quoted,
                actual: JobState::Created,
                ..
            }
        ),
        "{err}"
    );
    // Unknown job.
    assert!(matches!(
        jobs.transition("nope", JobState::Created, JobState::Quoted, ""),
        Err(StoreError::JobNotFound(_))
    ));
    // Duplicate id.
    assert!(matches!(
        jobs.insert(&new_job("j")),
        Err(StoreError::DuplicateJob(_))
    ));
    // Nothing moved, nothing logged.
    assert_eq!(jobs.get("j").unwrap().unwrap().state, JobState::Created);
    assert_eq!(jobs.events("j").unwrap().len(), 1);

    // Terminal states are closed.
    jobs.transition("j", JobState::Created, JobState::Failed, "no provider")
        .unwrap();
    jobs.transition("j", JobState::Failed, JobState::Refunded, "escrow returned")
        .unwrap();
    for to in JobState::ALL {
        assert!(matches!(
            jobs.transition("j", JobState::Refunded, to, ""),
            Err(StoreError::IllegalTransition { .. })
        ));
    }
    assert_eq!(jobs.events("j").unwrap().len(), 3);
}

#[test]
fn concurrent_transitions_only_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Store::open_in_dir(dir.path()).unwrap();
    const JOBS: usize = 20;
    const THREADS: usize = 8;
    for i in 0..JOBS {
        setup.jobs().insert(&new_job(&format!("j{i}"))).unwrap();
    }
    let started = Instant::now();
    // Separate connections (as separate processes would have) and one shared
    // connection, racing on the same rows.
    let shared = Arc::new(Store::open_in_dir(dir.path()).unwrap());
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            let shared = shared.clone();
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let own = Store::open_in_dir(&path).unwrap();
                let store: &Store = if t % 2 == 0 { &own } else { &shared };
                barrier.wait();
                let mut wins = Vec::new();
                for i in 0..JOBS {
                    match store.jobs().transition(
                        &format!("j{i}"),
                        JobState::Created,
                        JobState::Quoted,
                        &format!("thread {t}"),
                    ) {
                        Ok(()) => wins.push(i),
                        Err(StoreError::StateConflict {
                            actual: JobState::Quoted,
                            ..
                        }) => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                wins
            })
        })
        .collect();
    let mut winners = vec![0usize; JOBS];
    for h in handles {
        for i in h.join().unwrap() {
            winners[i] += 1;
        }
    }
    assert!(
        winners.iter().all(|&w| w == 1),
        "each job must have exactly one winner: {winners:?}"
    );
    for i in 0..JOBS {
        let id = format!("j{i}");
        assert_eq!(
            setup.jobs().get(&id).unwrap().unwrap().state,
            JobState::Quoted
        );
        assert_eq!(
            setup.jobs().events(&id).unwrap().len(),
            2,
            "one creation + one transition"
        );
    }
    eprintln!(
        "{} racing transitions over {THREADS} threads in {:?}",
        JOBS * THREADS,
        started.elapsed()
    );
}

#[test]
fn peers_and_reputation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_dir(dir.path()).unwrap();
    let peers = store.peers();
    peers
        .seen("p1", &["/ip4/127.0.0.1/tcp/1".into()], Some(&["m".into()]))
        .unwrap();
    peers.seen("p1", &[], None).unwrap();
    peers.record_latency("p1", 7).unwrap();
    let r = peers.record_outcome("p1", true).unwrap();
    assert!((r - 2.0 / 3.0).abs() < 1e-9, "{r}");
    let r = peers.record_outcome("p1", false).unwrap();
    assert!((r - 0.5).abs() < 1e-9, "{r}");
    let p = peers.get("p1").unwrap().unwrap();
    assert_eq!(p.addrs, vec!["/ip4/127.0.0.1/tcp/1".to_string()]);
    assert_eq!(p.models, vec!["m".to_string()]);
    assert_eq!((p.latency_ms, p.successes, p.failures), (Some(7), 1, 1));
    assert_eq!(peers.with_model("m").unwrap().len(), 1);
    assert!(peers.with_model("other").unwrap().is_empty());
}
