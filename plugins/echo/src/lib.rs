//! A trivial backend: streams the input text back one word at a time.
//!
//! It does no model work, so it measures the network and job machinery
//! alone (the latency benchmark), and its `delay_ms` parameter (sleep before
//! each word) makes a job last long enough for the failover and restart
//! tests to kill a process mid-run.

use infernet_plugin_api::*;

struct Echo;

impl Backend for Echo {
    fn new() -> Self {
        Echo
    }

    fn describe(&self) -> BackendInfo {
        BackendInfo::new(
            "echo",
            env!("CARGO_PKG_VERSION"),
            &["text-generation"],
            &["any"],
        )
    }

    fn execute(&mut self, job: JobRequest) -> Result<JobResult> {
        let text = job.input.text()?;
        let delay_ms: u64 = job.param_or("delay_ms", 0)?;
        if delay_ms > 60_000 {
            return Err(Error::invalid("delay_ms must be at most 60000"));
        }
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        for word in &words {
            if delay_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            }
            progress::emit_token(word);
        }
        let n = words.len() as u32;
        Ok(JobResult::text(text, n, n))
    }
}

export_backend!(Echo);
