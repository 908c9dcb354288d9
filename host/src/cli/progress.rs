//! Progress bars on stderr for the slow steps of a command: loading a
//! node (plugin compilation, model loading, proof key setup) and the
//! Groth16 setup. Hidden when stderr is not a terminal (logs, pipes, CI)
//! or the command prints `--json`, so output stays machine-readable.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use infernet_host::node::{LoadStep, OnLoadStep};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

/// Whether bars are drawn: stderr is a terminal and the output is not `--json`.
pub fn visible(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A bar of `len` steps on stderr (hidden unless [`visible`]), ticking so
/// that a long step still shows it is alive.
pub fn bar(len: u64, json: bool) -> ProgressBar {
    if !visible(json) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A spinner for one step of unknown length (hidden unless [`visible`]).
pub fn spinner(message: String, json: bool) -> ProgressBar {
    if !visible(json) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Draws a node's loading steps ([`LoadStep`]) as one bar, from the first
/// step (a node with nothing to load draws nothing), cleared once
/// everything is loaded (left as it was when loading fails: its message
/// names the step).
pub fn node_loading(json: bool) -> OnLoadStep {
    let drawn = std::sync::OnceLock::new();
    Arc::new(move |step: &LoadStep| {
        let bar = drawn.get_or_init(|| bar(step.total as u64, json));
        bar.set_length(step.total as u64);
        bar.set_position(step.done as u64);
        bar.set_message(step.what.clone());
        if step.done >= step.total {
            bar.finish_and_clear();
        }
    })
}
