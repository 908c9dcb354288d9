//! Processes killed mid-job, for real: `infernet node start` and
//! `infernet infer --network` run as child processes and get SIGKILL while
//! a job is running (the echo backend's `delay_ms` makes the job last).
//! What must hold: the job completes elsewhere without the caller retrying,
//! a restarted node resumes it, nothing is executed twice for one attempt,
//! nothing is lost.

use infernet_host::config::Config;
use infernet_host::p2p::protocol::hash_output;
use infernet_host::p2p::WireOutput;
use infernet_host::sdk::{InferOptions, Infernet};
use infernet_host::store::{JobRole, JobState, NewJob, Store};
use infernet_tests::net::{
    client_toml, echo_provider_toml, infernet_bin, job_rows, wait_for, wait_for_providers, NodeProc,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const PROMPT: &str = "one two three four five six seven eight";

fn echo_providers(root: &Path) -> Vec<NodeProc> {
    let first = NodeProc::start(&echo_provider_toml(root, "p0", 5, &[]));
    let boot = vec![first.addr.clone()];
    let mut all = vec![first];
    for name in ["p1", "p2"] {
        all.push(NodeProc::start(&echo_provider_toml(root, name, 5, &boot)));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_killed_mid_job_the_job_completes_elsewhere_and_is_not_rerun_after_restart() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let mut providers = echo_providers(root);
    let boot = vec![providers[0].addr.clone()];
    let client = Infernet::new(Config::load(&client_toml(root, "client", &boot, "")).unwrap())
        .start()
        .await
        .unwrap();
    wait_for_providers(&client, "echo", 3).await;

    let opts = InferOptions {
        params: vec![("delay_ms".into(), "250".into())],
        ..Default::default()
    };
    let job = {
        let c = client.client().clone();
        tokio::spawn(async move {
            c.submit(
                "echo",
                infernet_host::p2p::WireInput::Text(PROMPT.into()),
                &opts,
            )
            .await
        })
    };
    // Wait until the job runs on some provider, let it get going, kill it.
    let client_dir = root.join("client");
    let store = Store::open_in_dir(&client_dir).unwrap();
    let running = tokio::task::spawn_blocking(move || {
        wait_for("the job to run", Duration::from_secs(20), || {
            store
                .jobs()
                .list(1)
                .ok()?
                .into_iter()
                .find(|r| r.state == JobState::Running)
        })
    })
    .await
    .unwrap();
    let victim_peer = running.provider_peer.clone().unwrap();
    let victim = providers
        .iter()
        .position(|p| p.peer == victim_peer)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    providers[victim].kill();

    let out = job
        .await
        .unwrap()
        .expect("the job completes on another provider");
    assert_eq!(out.output, WireOutput::Text(PROMPT.into()));
    assert_eq!(out.attempts, 2);
    assert_ne!(out.provider.to_string(), victim_peer);
    let events = client.store().jobs().events(&out.job_id).unwrap();
    assert!(
        events.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with(&format!("provider-failed {victim_peer}")))),
        "the failover is in the job's log: {events:?}"
    );
    // The victim's reputation dropped, the server's rose.
    let victim_rec = client.store().peers().get(&victim_peer).unwrap().unwrap();
    assert_eq!(victim_rec.failures, 1);

    // Restart the killed provider: it ends the interrupted run as failed
    // and never runs it again.
    let victim_dir = root.join(format!("p{victim}"));
    let first_attempt = format!("{}.1", out.job_id);
    let before = job_rows(&victim_dir);
    let row = before
        .iter()
        .find(|r| r.id == first_attempt)
        .expect("the victim recorded the first attempt");
    assert_eq!(row.state, JobState::Running, "killed mid-run: {row:?}");
    let config = root.join(format!("p{victim}.toml"));
    providers[victim] = NodeProc::start(&config);
    let after = job_rows(&victim_dir);
    let row = after.iter().find(|r| r.id == first_attempt).unwrap();
    assert_eq!(row.state, JobState::Failed);
    assert!(
        row.error
            .as_deref()
            .unwrap_or_default()
            .contains("provider restarted"),
        "{row:?}"
    );
    // Across all providers: attempt 1 ran once (killed), attempt 2 ran
    // once and delivered. Nothing else.
    let mut all = vec![];
    for i in 0..3 {
        all.extend(job_rows(&root.join(format!("p{i}"))));
    }
    let mine: Vec<_> = all
        .iter()
        .filter(|r| r.id.starts_with(&out.job_id))
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    let second = mine
        .iter()
        .find(|r| r.id == format!("{}.2", out.job_id))
        .unwrap();
    assert_eq!(second.state, JobState::Delivered);
    client.shutdown().await;
}

#[test]
fn client_killed_mid_job_resumes_after_restart_without_running_it_twice() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let providers = echo_providers(root);
    let boot = vec![providers[0].addr.clone()];
    let config = client_toml(root, "client", &boot, "");

    // The client as a process: `infer --network`, killed once the job runs.
    let mut infer = Command::new(infernet_bin())
        .args([
            "infer",
            "--network",
            "--model",
            "echo",
            "--param",
            "delay_ms=250",
            "--config",
        ])
        .arg(&config)
        .arg(PROMPT)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let client_dir = root.join("client");
    let running = wait_for("the job to run", Duration::from_secs(30), || {
        job_rows(&client_dir)
            .into_iter()
            .find(|r| r.state == JobState::Running)
    });
    std::thread::sleep(Duration::from_millis(300));
    infer.kill().unwrap();
    infer.wait().unwrap();
    let state = job_rows(&client_dir)
        .into_iter()
        .find(|r| r.id == running.id)
        .unwrap()
        .state;
    assert_eq!(state, JobState::Running, "killed mid-job");

    // Restart the client node: it resumes the job from its row.
    let _client = NodeProc::start(&config);
    let done = wait_for("the resumed job to settle", Duration::from_secs(30), || {
        job_rows(&client_dir)
            .into_iter()
            .find(|r| r.id == running.id && !r.state.is_active())
    });
    assert_eq!(done.state, JobState::Settled, "{done:?}");
    assert_eq!(
        done.attempts, 1,
        "resumed on the same provider, not re-placed"
    );
    let stored_hash = done.result.as_ref().unwrap()["output_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stored_hash, hash_output(&WireOutput::Text(PROMPT.into())));
    // Exactly one execution across all providers, delivered.
    let mut executions = vec![];
    for i in 0..3 {
        executions.extend(
            job_rows(&root.join(format!("p{i}")))
                .into_iter()
                .filter(|r| r.role == JobRole::Provider && r.id.starts_with(&running.id)),
        );
    }
    assert_eq!(executions.len(), 1, "{executions:?}");
    assert_eq!(executions[0].state, JobState::Delivered);
    assert_eq!(executions[0].id, format!("{}.1", running.id));

    // What `infernet jobs` / `infernet peers` show of it, for scripts and people.
    let cli = |args: &[&str]| {
        let out = Command::new(infernet_bin())
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let jobs: serde_json::Value = serde_json::from_str(&cli(&["jobs", "--json"])).unwrap();
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == running.id.as_str())
        .unwrap();
    assert_eq!(job["state"], "settled");
    assert_eq!(
        job["provider"],
        executions[0].provider_peer.as_deref().unwrap()
    );
    let states: Vec<&str> = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "created",
            "quoted",
            "escrowed",
            "assigned",
            "running",
            "delivered",
            "settled"
        ]
    );
    let table = cli(&["jobs"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains(&running.id) && l.contains("settled")),
        "{table}"
    );
    let peers: serde_json::Value = serde_json::from_str(&cli(&["peers", "--json"])).unwrap();
    for p in &providers {
        let rec = peers
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["peer_id"] == p.peer.as_str());
        let rec = rec.unwrap_or_else(|| panic!("peer {} missing from {peers}", p.peer));
        assert_eq!(rec["models"], serde_json::json!(["echo"]));
    }
    drop(providers);
}

/// The client process dies right after persisting each step in turn
/// (`INFERNET_CRASH_AFTER=<state>` aborts it there); a restarted client node
/// finishes every job, each executed exactly once.
#[test]
fn client_crash_after_each_step_resumes_to_exactly_one_execution() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let providers = echo_providers(root);
    let boot = vec![providers[0].addr.clone()];
    let config = client_toml(root, "client", &boot, "");
    let client_dir = root.join("client");
    let steps = [
        "created",
        "quoted",
        "escrowed",
        "assigned",
        "running",
        "delivered",
    ];
    for step in steps {
        let status = Command::new(infernet_bin())
            .args(["infer", "--network", "--model", "echo", "--config"])
            .arg(&config)
            .arg(format!("crash after {step}"))
            .env("INFERNET_CRASH_AFTER", step)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the client must die after `{step}`");
    }
    let mut jobs = job_rows(&client_dir);
    jobs.sort_by_key(|j| j.created_at_ms);
    let states: Vec<&str> = jobs.iter().map(|j| j.state.as_str()).collect();
    assert_eq!(states, steps, "each job stopped where its process died");

    let _client = NodeProc::start(&config);
    let done = wait_for(
        "every resumed job to settle",
        Duration::from_secs(30),
        || {
            let rows = job_rows(&client_dir);
            rows.iter().all(|r| !r.state.is_active()).then_some(rows)
        },
    );
    let mut executions = vec![];
    for i in 0..3 {
        executions.extend(job_rows(&root.join(format!("p{i}"))));
    }
    for job in &done {
        assert_eq!(job.state, JobState::Settled, "{job:?}");
        let ran: Vec<_> = executions
            .iter()
            .filter(|e| e.id.starts_with(&format!("{}.", job.id)))
            .collect();
        assert_eq!(
            ran.len(),
            1,
            "job {} ran {} times: {ran:?}",
            job.id,
            ran.len()
        );
        assert_eq!(ran[0].state, JobState::Delivered);
    }
    drop(providers);
}

/// The start-up resume takes its list before `start` returns, so a job
/// this process creates afterwards is driven only by its own caller. (The
/// list used to be taken by a spawned task that could run after the first
/// new job existed; it then refunded a held replica mid-comparison.) On a
/// one-thread runtime no spawned task runs between `start` returning and
/// the insert below, so the old order failed this every time.
#[test]
fn start_up_resume_leaves_jobs_created_after_start_to_their_caller() {
    let root = tempfile::tempdir().unwrap();
    let extra = "[client]\ndiscovery_timeout_ms = 300\n";
    let config = Config::load(&client_toml(root.path(), "client", &[], extra)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let node = Infernet::new(config).start().await.unwrap();
        let request = serde_json::json!({
            "model": "echo", "input": {"Text": PROMPT}, "params": [],
            "max_budget": null, "currency": null, "max_output_tokens": 16,
        });
        let job = node
            .store()
            .jobs()
            .insert(&NewJob {
                id: "created-after-start".into(),
                role: JobRole::Client,
                model: "echo".into(),
                request_hash: "00".repeat(32),
                request: Some(request),
                client_peer: Some(node.peer_id().to_string()),
                provider_peer: None,
            })
            .unwrap();
        // Long enough for a resume to find no provider and fail the job.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after = node.store().jobs().get(&job.id).unwrap().unwrap();
        assert_eq!(after.state, JobState::Created, "{after:?}");
        assert_eq!(node.store().jobs().events(&job.id).unwrap().len(), 1);
        node.shutdown().await;
    });
}
