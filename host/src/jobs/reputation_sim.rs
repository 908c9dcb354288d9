//! The reputation simulation behind `infernet bench --verify` (and its
//! short version in the tests): one client choosing among N providers,
//! some of them cheaters, with the real ranking ([`super::select::rank`])
//! on the real reputation (`verify::reputation`'s [`Book`], the weighing
//! `scores` applies to the store), under `replicate(k)` or `spot-check(p)`.
//! A checked job's replicas are compared; a cheat among them is ruled
//! against (a referee always catches a wrong result, as
//! `verify::sim` measured on real plugins) and every replica's outcome is
//! recorded first-hand, as `jobs::client` does. Optionally a swarm of
//! fresh identities gossips the opposite of every outcome. It lives in
//! `jobs` because ranking does; nothing here touches a network or a store.
//!
//! It reports the cheaters' share of executions over a sliding window of
//! jobs, the job count after which that share stays under 5 %, and what
//! the honest providers get at the end.

use super::select::{rank, Candidate};
use crate::config::{SelectionWeights, VerifyPolicy};
use crate::p2p::AttestedOutcome as Outcome;
use crate::verify::reputation::{Book, Params};
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct RepSimConfig {
    /// Providers, cheaters included.
    pub providers: usize,
    /// How many of them cheat.
    pub cheaters: usize,
    /// The share of its jobs a cheater cheats on.
    pub cheat_rate: f64,
    /// `replicate(k)` or `spot-check(p)` (`none` checks nothing).
    pub policy: VerifyPolicy,
    /// Jobs the client submits.
    pub jobs: usize,
    /// Jobs submitted at once (their picks share the in-flight counts, as
    /// a client's concurrent jobs do).
    pub batch: usize,
    /// Jobs a provider says it runs at once.
    pub capacity: u32,
    /// How much cheaper than the honest providers the cheaters quote
    /// (0.2: 20 %; cheating saves compute).
    pub cheater_discount: f64,
    /// Simulated time between batches, ms (observations decay with it).
    pub batch_interval_ms: i64,
    /// The sliding window the share is measured over, in jobs.
    pub window: usize,
    /// Fresh identities gossiping the opposite of every outcome.
    pub sybils: usize,
    /// The baseline: the cheaters are not on the network at all (the
    /// honest providers' share without them).
    pub without_cheaters: bool,
    /// The draw of prices, latencies, cheats and spot checks.
    pub seed: u64,
    /// The reputation's constants.
    pub params: Params,
    /// The client's selection weights.
    pub weights: SelectionWeights,
}

impl Default for RepSimConfig {
    /// 10 providers, 2 of them cheating on every job at a 20 % discount,
    /// `spot-check(0.1)`, 2,000 jobs in batches of 8, capacity 2, ten
    /// minutes between batches, a 50-job window, no sybils.
    fn default() -> Self {
        RepSimConfig {
            providers: 10,
            cheaters: 2,
            cheat_rate: 1.0,
            policy: VerifyPolicy::SpotCheck(0.1),
            jobs: 2000,
            batch: 8,
            capacity: 2,
            cheater_discount: 0.2,
            batch_interval_ms: 10 * 60 * 1000,
            window: 50,
            sybils: 0,
            without_cheaters: false,
            seed: 13,
            params: Params::default(),
            weights: SelectionWeights::default(),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub struct RepSimReport {
    /// Which providers cheat (by index).
    pub cheater: Vec<bool>,
    /// Per job, the providers that ran it (its replicas).
    pub ran: Vec<Vec<usize>>,
    /// Per job j (from `window` on), the cheaters' share of the executions
    /// of jobs (j − window, j].
    pub share: Vec<(usize, f64)>,
    /// The job count after which the windowed share stays under 5 %
    /// (`None`: it never does).
    pub below_5pct_after: Option<usize>,
    /// Cheats ruled against (one per cheating replica of a checked job).
    pub caught: usize,
    /// Cheated results the client accepted unchecked (a spot check not
    /// drawn).
    pub accepted_cheats: usize,
    /// Checked jobs.
    pub checked: usize,
}

impl RepSimReport {
    /// The cheaters' share of executions in jobs `from..to`.
    pub fn cheater_share(&self, from: usize, to: usize) -> f64 {
        let (mut all, mut bad) = (0usize, 0usize);
        for ran in &self.ran[from.min(self.ran.len())..to.min(self.ran.len())] {
            all += ran.len();
            bad += ran.iter().filter(|&&i| self.cheater[i]).count();
        }
        bad as f64 / all.max(1) as f64
    }

    /// Each provider's share of executions in jobs `from..to`.
    pub fn shares(&self, from: usize, to: usize) -> Vec<f64> {
        let mut n = vec![0usize; self.cheater.len()];
        let mut all = 0usize;
        for ran in &self.ran[from.min(self.ran.len())..to.min(self.ran.len())] {
            for &i in ran {
                n[i] += 1;
                all += 1;
            }
        }
        n.into_iter()
            .map(|k| k as f64 / all.max(1) as f64)
            .collect()
    }
}

/// A simulated provider.
struct Provider {
    id: String,
    price: u64,
    latency: Duration,
    cheats: bool,
}

/// Runs the simulation.
pub fn simulate(cfg: &RepSimConfig) -> RepSimReport {
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let n = cfg.providers.max(1);
    // Cheaters at random positions (ties in the ranking go to the lower
    // index, so their place must not decide).
    let mut cheater = vec![false; n];
    let mut placed = 0;
    while placed < cfg.cheaters.min(n) {
        let i = rng.gen_range(0..n);
        if !cheater[i] {
            cheater[i] = true;
            placed += 1;
        }
    }
    let honest_price = 1000u64;
    let providers: Vec<Provider> = (0..n)
        .map(|i| Provider {
            id: format!("provider-{i}"),
            price: if cheater[i] {
                (honest_price as f64 * (1.0 - cfg.cheater_discount)).round() as u64
            } else {
                honest_price + rng.gen_range(0..20)
            },
            latency: Duration::from_millis(rng.gen_range(5..10)),
            cheats: cheater[i],
        })
        .collect();
    let me = "client";
    let mut book = Book::new(cfg.params, me);
    let sybils: Vec<String> = (0..cfg.sybils).map(|s| format!("sybil-{s}")).collect();
    let mut report = RepSimReport {
        cheater: cheater.clone(),
        ran: Vec::with_capacity(cfg.jobs),
        share: Vec::new(),
        below_5pct_after: None,
        caught: 0,
        accepted_cheats: 0,
        checked: 0,
    };
    let start_ms = 1_800_000_000_000i64;
    let mut job = 0;
    let mut batch_no = 0i64;
    while job < cfg.jobs {
        let now = start_ms + batch_no * cfg.batch_interval_ms;
        batch_no += 1;
        let mut in_flight = vec![0u32; n];
        for _ in 0..cfg.batch.max(1) {
            if job >= cfg.jobs {
                break;
            }
            job += 1;
            let k = match cfg.policy {
                VerifyPolicy::Replicate(k) => k as usize,
                VerifyPolicy::SpotCheck(p) if rng.gen_bool(p.clamp(0.0, 1.0)) => 2,
                _ => 1,
            };
            let mut chosen: Vec<usize> = Vec::with_capacity(k);
            for _ in 0..k.min(n) {
                let scores: Vec<_> = providers.iter().map(|p| book.score(&p.id, now)).collect();
                let open: Vec<usize> = (0..n)
                    .filter(|i| !(chosen.contains(i) || cfg.without_cheaters && cheater[*i]))
                    .collect();
                // The client's rule: a barred provider is not asked while
                // any other is available.
                let bar = open.iter().any(|&i| !scores[i].barred);
                let candidates: Vec<Candidate> = open
                    .iter()
                    .filter(|&&i| !(bar && scores[i].barred))
                    .map(|&i| Candidate {
                        index: i,
                        price: providers[i].price,
                        reputation: scores[i].lower,
                        latency: Some(providers[i].latency),
                        in_flight: in_flight[i],
                        capacity: cfg.capacity,
                    })
                    .collect();
                let Some(&(best, _)) = rank(&candidates, &cfg.weights).first() else {
                    break;
                };
                chosen.push(best);
                in_flight[best] += 1;
            }
            let cheated: Vec<bool> = chosen
                .iter()
                .map(|&i| providers[i].cheats && rng.gen_bool(cfg.cheat_rate.clamp(0.0, 1.0)))
                .collect();
            if chosen.len() >= 2 {
                report.checked += 1;
                // Honest replicas agree; a cheat's result differs from every
                // other (no collusion), so any cheat means a dispute whose
                // ruling names exactly the cheating replicas.
                for (&i, &c) in chosen.iter().zip(&cheated) {
                    let outcome = if c {
                        report.caught += 1;
                        Outcome::Cheated
                    } else {
                        Outcome::Verified
                    };
                    book.observe(me, &providers[i].id, outcome, now);
                    let lie = match outcome {
                        Outcome::Verified => Outcome::Cheated,
                        Outcome::Cheated => Outcome::Verified,
                    };
                    for s in &sybils {
                        book.observe(s, &providers[i].id, lie, now);
                    }
                }
            } else if cheated.first() == Some(&true) {
                report.accepted_cheats += 1;
            }
            report.ran.push(chosen);
        }
    }
    let w = cfg.window.max(1);
    for j in w..=report.ran.len() {
        report.share.push((j, report.cheater_share(j - w, j)));
    }
    report.below_5pct_after = report
        .share
        .iter()
        .rposition(|&(_, s)| s >= 0.05)
        .map_or(report.share.first().map(|s| s.0), |last_bad| {
            report.share.get(last_bad + 1).map(|s| s.0)
        });
    report
}

/// One scenario over several seeds: means, and the worst seed's job count
/// to stay under 5 %.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Seeds run.
    pub seeds: usize,
    /// Mean cheater share in jobs 1–50, 51–100, 101–200, and the last 500.
    pub share: [f64; 4],
    /// Mean and worst job count after which the share stays under 5 %
    /// (`None`: some seed never got there).
    pub below_5pct_after: (f64, Option<usize>),
    /// Mean cheats caught, and mean cheated results accepted unchecked.
    pub caught: f64,
    /// Mean cheated results accepted unchecked.
    pub accepted_cheats: f64,
    /// The smallest and largest honest provider's share in the last 500
    /// jobs, over all seeds.
    pub honest_share: (f64, f64),
    /// The same without the cheaters on the network (the baseline).
    pub baseline_share: (f64, f64),
    /// How far one honest provider's share (last 500 jobs) is from its
    /// share in the baseline, on average over providers and seeds.
    pub mean_gap: f64,
    /// (seed, honest provider) pairs under a quarter of a fair share in
    /// the last 500 jobs, of how many; and in the baseline.
    pub starved: (usize, usize, usize),
}

/// Runs `cfg` with seeds `1..=seeds` and summarises.
pub fn summarize(cfg: &RepSimConfig, seeds: usize) -> Summary {
    let mut out = Summary {
        seeds,
        share: [0.0; 4],
        below_5pct_after: (0.0, Some(0)),
        caught: 0.0,
        accepted_cheats: 0.0,
        honest_share: (f64::MAX, 0.0),
        baseline_share: (f64::MAX, 0.0),
        mean_gap: 0.0,
        starved: (0, 0, 0),
    };
    let k = seeds.max(1) as f64;
    let (mut gap, mut pairs) = (0.0, 0usize);
    for seed in 1..=seeds.max(1) as u64 {
        let r = simulate(&RepSimConfig {
            seed,
            ..cfg.clone()
        });
        let n = r.ran.len();
        let last = n.saturating_sub(500);
        for (i, (a, b)) in [(0, 50), (50, 100), (100, 200), (last, n)]
            .iter()
            .enumerate()
        {
            out.share[i] += r.cheater_share(*a, *b) / k;
        }
        out.below_5pct_after = match (out.below_5pct_after, r.below_5pct_after) {
            ((mean, Some(worst)), Some(j)) => (mean + j as f64 / k, Some(worst.max(j))),
            ((mean, _), _) => (mean, None),
        };
        out.caught += r.caught as f64 / k;
        out.accepted_cheats += r.accepted_cheats as f64 / k;
        let b = simulate(&RepSimConfig {
            seed,
            without_cheaters: true,
            ..cfg.clone()
        });
        let shares = r.shares(last, n);
        let base = b.shares(b.ran.len().saturating_sub(500), b.ran.len());
        for (i, c) in r.cheater.iter().enumerate() {
            if !c {
                out.honest_share.0 = out.honest_share.0.min(shares[i]);
                out.honest_share.1 = out.honest_share.1.max(shares[i]);
                out.baseline_share.0 = out.baseline_share.0.min(base[i]);
                out.baseline_share.1 = out.baseline_share.1.max(base[i]);
                gap += (shares[i] - base[i]).abs();
                pairs += 1;
                let fair = 1.0 / r.cheater.iter().filter(|c| !**c).count().max(1) as f64;
                out.starved.0 += usize::from(shares[i] < fair / 4.0);
                out.starved.1 += 1;
                out.starved.2 += usize::from(base[i] < fair / 4.0);
            }
        }
    }
    out.mean_gap = gap / pairs.max(1) as f64;
    out
}

/// The table `infernet bench --verify` prints (Markdown): the default
/// setting ([`RepSimConfig::default`] with `jobs` jobs) under
/// `replicate(2)`, `spot-check(0.1)` (also with 100 lying sybils, and
/// against cheaters that cheat on one job in five), `spot-check(0.05)`
/// and no checks, each over `seeds` seeds.
pub fn table(jobs: usize, seeds: usize) -> String {
    use std::fmt::Write;
    let base = RepSimConfig {
        jobs,
        ..RepSimConfig::default()
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} providers ({} cheating, quoting {:.0} % less), one client, {jobs} jobs in batches of {} \
         (capacity {} each), {} min apart; mean over {seeds} seeds; cheater share = their part of \
         the executions (replicas included) in the window\n",
        base.providers,
        base.cheaters,
        base.cheater_discount * 100.0,
        base.batch,
        base.capacity,
        base.batch_interval_ms / 60_000,
    );
    let _ = writeln!(t, "| policy | cheat rate | sybils | cheater share, jobs 1–50 | 51–100 | 101–200 | last 500 | under 5 % (50-job window) after: mean / worst | cheats caught | cheated results accepted unchecked | each honest provider, last 500 | the same without cheaters | mean gap | honest providers under ¼ of a fair share (without cheaters) |");
    let _ = writeln!(
        t,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let scenarios = [
        (VerifyPolicy::Replicate(2), 1.0, 0),
        (VerifyPolicy::SpotCheck(0.1), 1.0, 0),
        (VerifyPolicy::SpotCheck(0.1), 1.0, 100),
        (VerifyPolicy::SpotCheck(0.1), 0.2, 0),
        (VerifyPolicy::SpotCheck(0.05), 1.0, 0),
        (VerifyPolicy::None, 1.0, 0),
    ];
    let pct = |x: f64| format!("{:.1} %", 100.0 * x);
    for (policy, rate, sybils) in scenarios {
        let s = summarize(
            &RepSimConfig {
                policy: policy.clone(),
                cheat_rate: rate,
                sybils,
                ..base.clone()
            },
            seeds,
        );
        let below = match s.below_5pct_after {
            (mean, Some(worst)) => format!("{mean:.0} / {worst} jobs"),
            _ => "never".into(),
        };
        let _ = writeln!(
            t,
            "| {policy} | {rate} | {sybils} | {} | {} | {} | {} | {below} | {:.1} | {:.1} | {}–{} | {}–{} | {:.1} pt | {} of {} ({}) |",
            pct(s.share[0]),
            pct(s.share[1]),
            pct(s.share[2]),
            pct(s.share[3]),
            s.caught,
            s.accepted_cheats,
            pct(s.honest_share.0),
            pct(s.honest_share.1),
            pct(s.baseline_share.0),
            pct(s.baseline_share.1),
            100.0 * s.mean_gap,
            s.starved.0,
            s.starved.1,
            s.starved.2
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(policy: VerifyPolicy) -> RepSimConfig {
        RepSimConfig {
            policy,
            jobs: 400,
            ..RepSimConfig::default()
        }
    }

    /// The figures `infernet bench --verify` prints, on 400 jobs: the
    /// cheaters' share falls under 5 % within 200 jobs under either
    /// policy, and the honest providers share the rest.
    #[test]
    fn cheaters_share_falls_below_5_percent_and_honest_providers_keep_theirs() {
        for policy in [VerifyPolicy::Replicate(2), VerifyPolicy::SpotCheck(0.1)] {
            let cfg = short(policy.clone());
            let r = simulate(&cfg);
            let first = r.cheater_share(0, cfg.window);
            let after = r.below_5pct_after.expect("the share falls under 5 %");
            assert!(first > 0.0, "{policy}: they did get work at first");
            assert!(after <= 200, "{policy}: under 5 % only after {after} jobs");
            assert_eq!(r.cheater_share(300, 400), 0.0, "{policy}");
            // The honest providers: every one keeps at least half of a
            // fair share at the end.
            let shares = r.shares(300, 400);
            let honest = r.cheater.iter().filter(|c| !**c).count() as f64;
            for (i, s) in shares.iter().enumerate() {
                if !r.cheater[i] {
                    assert!(*s >= 0.5 / honest, "{policy}: provider {i}: {shares:?}");
                }
            }
            assert!(r.caught >= 2, "{policy}: both cheaters caught: {r:?}");
        }
    }

    #[test]
    fn a_swarm_of_lying_identities_changes_nothing() {
        let cfg = short(VerifyPolicy::SpotCheck(0.1));
        let plain = simulate(&cfg);
        let lied = simulate(&RepSimConfig { sybils: 50, ..cfg });
        assert_eq!(plain, lied);
    }

    #[test]
    #[ignore = "prints the bench table; run with --ignored --nocapture"]
    fn print_the_table() {
        eprintln!("{}", table(2000, 20));
    }

    #[test]
    fn without_checks_nothing_is_learnt() {
        let r = simulate(&short(VerifyPolicy::None));
        assert_eq!(r.checked, 0);
        assert_eq!(r.below_5pct_after, None, "cheaters keep their share");
        assert!(r.share.iter().all(|(_, s)| *s > 0.2), "{:?}", r.share);
        assert!(r.accepted_cheats >= 80, "{}", r.accepted_cheats);
    }
}
