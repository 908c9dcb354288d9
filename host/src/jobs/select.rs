//! Provider selection: a score per candidate from its quote, reputation,
//! latency and load, lower is better. Pure functions, so the policy is
//! tested without a network.

use crate::config::SelectionWeights;
use std::time::Duration;

/// What the client knows about one provider when choosing.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Index into the caller's own list (selection returns indices).
    pub index: usize,
    /// Quoted (or advertised) price in minor units.
    pub price: u64,
    /// Reputation in [0, 1].
    pub reputation: f64,
    /// Last ping round trip, if measured.
    pub latency: Option<Duration>,
    /// This client's jobs running there now.
    pub in_flight: u32,
    /// Jobs the provider says it runs at once (0 = unknown).
    pub capacity: u32,
}

/// Latency differences below this count for little: on a LAN or loopback
/// they are noise, not a reason to pile every job on one peer.
const LATENCY_SCALE: Duration = Duration::from_millis(20);
/// No single factor can outweigh the others by more than this.
const TERM_CAP: f64 = 10.0;

/// The candidates' indices, best first, with their scores.
pub fn rank(candidates: &[Candidate], w: &SelectionWeights) -> Vec<(usize, f64)> {
    let min_price = candidates.iter().map(|c| c.price).min().unwrap_or(0);
    let min_latency = candidates
        .iter()
        .filter_map(|c| c.latency)
        .min()
        .unwrap_or_default();
    let mut scored: Vec<(usize, f64)> = candidates
        .iter()
        .map(|c| (c.index, score(c, min_price, min_latency, w)))
        .collect();
    scored.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    scored
}

fn score(c: &Candidate, min_price: u64, min_latency: Duration, w: &SelectionWeights) -> f64 {
    let price = (c.price.saturating_sub(min_price)) as f64 / min_price.max(1) as f64;
    let reputation = 1.0 - c.reputation.clamp(0.0, 1.0);
    let latency = match c.latency {
        Some(l) => {
            l.saturating_sub(min_latency).as_secs_f64()
                / min_latency.max(LATENCY_SCALE).as_secs_f64()
        }
        None => 1.0,
    };
    let load = f64::from(c.in_flight) / f64::from(c.capacity.max(1));
    w.price * price.min(TERM_CAP)
        + w.reputation * reputation
        + w.latency * latency.min(TERM_CAP)
        + w.load * load.min(TERM_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: usize, price: u64, rep: f64, lat_ms: u64, in_flight: u32) -> Candidate {
        Candidate {
            index,
            price,
            reputation: rep,
            latency: Some(Duration::from_millis(lat_ms)),
            in_flight,
            capacity: 4,
        }
    }

    fn best(cands: &[Candidate]) -> usize {
        rank(cands, &SelectionWeights::default())[0].0
    }

    #[test]
    fn cheaper_wins_when_all_else_is_equal() {
        assert_eq!(best(&[c(0, 200, 0.5, 1, 0), c(1, 100, 0.5, 1, 0)]), 1);
    }

    #[test]
    fn reputation_outweighs_a_small_price_difference() {
        assert_eq!(best(&[c(0, 100, 0.1, 1, 0), c(1, 110, 0.9, 1, 0)]), 1);
    }

    #[test]
    fn load_spreads_jobs_over_equal_providers() {
        let cands = [
            c(0, 100, 0.5, 1, 3),
            c(1, 100, 0.5, 1, 0),
            c(2, 100, 0.5, 1, 1),
        ];
        let order: Vec<usize> = rank(&cands, &SelectionWeights::default())
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(order, vec![1, 2, 0]);
    }

    #[test]
    fn loopback_latency_noise_does_not_decide_but_a_slow_link_does() {
        // 0.2 ms vs 0.4 ms: noise; the idle provider wins.
        let mut a = c(0, 100, 0.5, 0, 1);
        a.latency = Some(Duration::from_micros(200));
        let mut b = c(1, 100, 0.5, 0, 0);
        b.latency = Some(Duration::from_micros(400));
        assert_eq!(best(&[a.clone(), b]), 1);
        // 200 ms away loses to a busier provider next door.
        let far = c(2, 100, 0.5, 200, 0);
        assert_eq!(best(&[a, far]), 0);
    }

    #[test]
    fn zero_weights_leave_only_the_stable_order() {
        let w = SelectionWeights {
            price: 0.0,
            reputation: 0.0,
            latency: 0.0,
            load: 0.0,
        };
        let r = rank(&[c(1, 500, 0.0, 90, 9), c(0, 1, 1.0, 1, 0)], &w);
        assert_eq!(r[0].0, 0);
        assert!(r.iter().all(|(_, s)| *s == 0.0));
    }
}
