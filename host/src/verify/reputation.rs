//! Reputation from verified outcomes only: per provider a Beta posterior
//! over "its next result is right", fed by observations that a check
//! backed — a replica that agreed with another provider's, a spot check
//! that matched, a referee's ruling, a proof — and never by a provider's
//! own claim or by "the client got a result". Each observation decays
//! (half-life [`Params::half_life_ms`], 7 days by default), a proven cheat
//! weighs [`Params::cheat_weight`] (20) verified successes, and selection
//! reads a lower confidence bound ([`Score::lower`]) so a provider with
//! few observations does not outrank a proven one.
//!
//! Observations come from this node (first-hand, weight 1) and from other
//! verifiers' signed attestations (`p2p::attestation`), which count with
//! a weight from the attester's standing *in this node's own view*
//! ([`attester_weight`]): the verified work this node itself saw it do,
//! and stake an arbiter certified. A fresh identity has neither and
//! counts exactly 0; one attester counts at most
//! [`Params::per_attester_cap`] observations about a subject, attesters
//! whose only standing is stake at most [`Params::stake_only_cap`]
//! together, all third parties at most [`Params::third_party_cap`] —
//! less than one first-hand ruling. Standing is never derived from other
//! attestations, so identities vouching for each other gain nothing.
//!
//! The maths ([`Tally`], [`combine`], [`Book`]) is pure; [`scores`] reads
//! the store (`attestations`, `advertised_stakes`); [`sign`] / [`record`]
//! make and keep attestations.

use crate::config::ReputationConfig;
use crate::p2p::attestation::{Attestation, Outcome, SignedAttestation};
use crate::p2p::libp2p::identity::Keypair;
use crate::p2p::protocol::{decode, encode, sha256_hex, Advert, Money, SignatureError};
use crate::payments::currency::{currency, FixedRates, RateSource};
use crate::store::{AttestationRecord, Store, StoreError};
use std::collections::HashMap;

/// One day in milliseconds.
pub const DAY_MS: f64 = 86_400_000.0;
/// First-hand observations read per score (the newest).
const MAX_FIRST_HAND: usize = 100_000;
/// Attestations about one subject read per score (the newest).
const MAX_PER_SUBJECT: usize = 10_000;
/// An advertised stake older than this is not counted.
const STAKE_FRESH_MS: i64 = 86_400_000;

/// Why an attestation could not be made, kept or read.
#[derive(Debug, thiserror::Error)]
pub enum ReputationError {
    /// The store failed.
    #[error("attestation store: {0}")]
    Store(#[from] StoreError),
    /// Signing failed.
    #[error("cannot sign the attestation: {0}")]
    Sign(#[from] SignatureError),
    /// A stored or given attestation does not encode or decode.
    #[error("attestation encoding: {0}")]
    Encoding(String),
}

/// The constants of the reputation. [`Params::default`] is what a node
/// uses unless `[client.reputation]` says otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// An observation's weight halves every this many ms (7 days: a
    /// provider's record reflects the last few weeks; a ruling this node
    /// saw bars the cheat for about a month, 4.3 half-lives).
    pub half_life_ms: f64,
    /// Weight of one verified success.
    pub ok_weight: f64,
    /// Weight of one proven cheat, in verified successes (20: a provider
    /// that cheats on more than about one verified job in six has a
    /// posterior mean under [`Params::bar_below`] however long it works,
    /// and one caught once in eleven verified jobs scores below a stranger).
    pub cheat_weight: f64,
    /// Standard deviations below the posterior mean that selection reads
    /// (0.5: a stranger, Beta(1, 1), scores 0.36; one verified success
    /// 0.55; a provider caught once in eleven verified jobs 0.30).
    pub z: f64,
    /// The most a third party's observation weighs (a first-hand one
    /// weighs 1).
    pub third_party_max: f64,
    /// First-hand verified successes of an attester for half of
    /// [`Params::third_party_max`] from work.
    pub work_half: f64,
    /// The most certified stake adds to an attester's weight.
    pub stake_weight: f64,
    /// Certified stake, in USD, for half of [`Params::stake_weight`].
    pub stake_half_usd: f64,
    /// The most one attester's word about one subject counts, in
    /// (weighted) observations.
    pub per_attester_cap: f64,
    /// The most attesters with stake but no verified work count about one
    /// subject, together.
    pub stake_only_cap: f64,
    /// The most all third parties count about one subject, together (less
    /// than one first-hand cheat).
    pub third_party_cap: f64,
    /// A provider whose posterior mean is below this (third parties with
    /// standing can put it there), or whom this node itself saw ruled
    /// against while that ruling still weighs a success or more, is not
    /// selected while any other is available.
    pub bar_below: f64,
    /// Observations older than this many half-lives (weight < 0.1 %) are
    /// not read, and pruned.
    pub horizon_half_lives: f64,
}

impl Default for Params {
    fn default() -> Params {
        Params::from_config(&ReputationConfig::default())
    }
}

impl Params {
    /// The parameters `[client.reputation]` sets, the rest fixed.
    pub fn from_config(c: &ReputationConfig) -> Params {
        Params {
            half_life_ms: c.half_life_days * DAY_MS,
            ok_weight: 1.0,
            cheat_weight: c.cheat_weight,
            z: 0.5,
            third_party_max: 0.5,
            work_half: 10.0,
            stake_weight: c.stake_weight,
            stake_half_usd: 100.0,
            per_attester_cap: 4.0,
            stake_only_cap: 2.0,
            third_party_cap: 10.0,
            bar_below: 0.2,
            horizon_half_lives: 10.0,
        }
    }

    /// What an observation `age_ms` old still weighs (1 when new; ages
    /// below 0, a clock ahead, count as new).
    pub fn decay(&self, age_ms: i64) -> f64 {
        0.5f64.powf(age_ms.max(0) as f64 / self.half_life_ms)
    }

    /// The mass of one observation of `outcome` made at `at_ms`, at `now_ms`.
    pub fn mass(&self, outcome: Outcome, at_ms: i64, now_ms: i64) -> Tally {
        let d = self.decay(now_ms - at_ms);
        match outcome {
            Outcome::Verified => Tally {
                ok: self.ok_weight * d,
                bad: 0.0,
            },
            Outcome::Cheated => Tally {
                ok: 0.0,
                bad: self.cheat_weight * d,
            },
        }
    }

    /// The oldest observation read at `now_ms`.
    pub fn horizon(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub((self.horizon_half_lives * self.half_life_ms) as i64)
    }
}

/// Weighted, decayed evidence: successes and failures (a cheat already
/// counted [`Params::cheat_weight`] times).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Verified successes.
    pub ok: f64,
    /// Proven cheats, weighted.
    pub bad: f64,
}

impl Tally {
    /// Both added.
    pub fn plus(self, o: Tally) -> Tally {
        Tally {
            ok: self.ok + o.ok,
            bad: self.bad + o.bad,
        }
    }

    /// Both times `f`.
    pub fn scaled(self, f: f64) -> Tally {
        Tally {
            ok: self.ok * f,
            bad: self.bad * f,
        }
    }

    /// `ok + bad`.
    pub fn total(self) -> f64 {
        self.ok + self.bad
    }

    /// Scaled down (both alike) so that the total is at most `cap`.
    pub fn capped(self, cap: f64) -> Tally {
        let t = self.total();
        if t > cap && t > 0.0 {
            self.scaled(cap / t)
        } else {
            self
        }
    }
}

/// A provider's reputation in this node's view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// This node's own observations, decayed.
    pub first_hand: Tally,
    /// Other attesters' observations, weighted, decayed and capped.
    pub third_party: Tally,
    /// Beta α = 1 + successes.
    pub alpha: f64,
    /// Beta β = 1 + weighted cheats.
    pub beta: f64,
    /// Posterior mean α / (α + β).
    pub mean: f64,
    /// Mean − z·sd, clamped to [0, 1]: what selection reads.
    pub lower: f64,
    /// Not selected while another provider is available: the mean is below
    /// [`Params::bar_below`], or a first-hand ruling against it still
    /// weighs a verified success or more.
    pub barred: bool,
}

impl Score {
    /// A provider nothing is known of: Beta(1, 1).
    pub fn stranger(p: &Params) -> Score {
        Score::of(p, Tally::default(), Tally::default())
    }

    /// The posterior from first-hand and third-party evidence.
    pub fn of(p: &Params, first_hand: Tally, third_party: Tally) -> Score {
        let alpha = 1.0 + first_hand.ok + third_party.ok;
        let beta = 1.0 + first_hand.bad + third_party.bad;
        let n = alpha + beta;
        let mean = alpha / n;
        let sd = (alpha * beta / (n * n * (n + 1.0))).sqrt();
        Score {
            first_hand,
            third_party,
            alpha,
            beta,
            mean,
            lower: (mean - p.z * sd).clamp(0.0, 1.0),
            barred: mean < p.bar_below || first_hand.bad >= p.ok_weight,
        }
    }
}

/// What this node holds of an attester: the verified work it saw it do
/// (first-hand observations about it), and its certified stake in USD.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Standing {
    /// First-hand evidence about the attester (as a provider).
    pub work: Tally,
    /// Stake an arbiter certified, USD (0: none, or only claimed).
    pub stake_usd: f64,
}

/// The weight of one of `standing`'s attester's observations, in
/// first-hand observations: work and stake add up, to at most
/// [`Params::third_party_max`]. No work and no stake: exactly 0. An
/// attester this node caught cheating has no voice while that ruling
/// still weighs a success or more (a month at the defaults).
///
/// ```text
/// from work  = third_party_max · n / (n + work_half)      n = verified successes seen
/// from stake = stake_weight · s / (s + stake_half_usd)     s = certified stake, USD
/// weight     = min(third_party_max, from work + from stake), 0 if b ≥ 1
///                                                          b = its proven cheats, weighted
/// ```
pub fn attester_weight(p: &Params, standing: &Standing) -> f64 {
    let n = standing.work.ok.max(0.0);
    let b = standing.work.bad.max(0.0);
    let s = standing.stake_usd.max(0.0);
    if b >= p.ok_weight || b.is_nan() {
        return 0.0;
    }
    let work = p.third_party_max * n / (n + p.work_half);
    let stake = if s > 0.0 {
        p.stake_weight * s / (s + p.stake_half_usd)
    } else {
        0.0
    };
    let w = (work + stake).min(p.third_party_max);
    if w.is_finite() {
        w.max(0.0)
    } else {
        0.0
    }
}

/// A subject's score from this node's first-hand evidence and, per other
/// attester, its (decayed, unweighted) evidence with the attester's
/// standing: each attester's word weighed ([`attester_weight`]) and capped
/// at [`Params::per_attester_cap`]; those with no verified work (stake
/// only) capped at [`Params::stake_only_cap`] together; all at
/// [`Params::third_party_cap`].
pub fn combine(
    p: &Params,
    first_hand: Tally,
    others: impl IntoIterator<Item = (Tally, Standing)>,
) -> Score {
    let (mut proven, mut stake_only) = (Tally::default(), Tally::default());
    for (evidence, standing) in others {
        let w = attester_weight(p, &standing);
        if w <= 0.0 {
            continue;
        }
        let counted = evidence.scaled(w).capped(p.per_attester_cap);
        if standing.work.ok > 0.0 {
            proven = proven.plus(counted);
        } else {
            stake_only = stake_only.plus(counted);
        }
    }
    let third = proven
        .plus(stake_only.capped(p.stake_only_cap))
        .capped(p.third_party_cap);
    Score::of(p, first_hand, third)
}

/// A decaying tally kept up to date incrementally (the simulation's book).
#[derive(Debug, Clone, Copy, Default)]
struct Decaying {
    tally: Tally,
    at_ms: i64,
}

impl Decaying {
    fn add(&mut self, p: &Params, outcome: Outcome, at_ms: i64) {
        if at_ms >= self.at_ms {
            self.tally = self.tally.scaled(p.decay(at_ms - self.at_ms));
            self.at_ms = at_ms;
        }
        self.tally = self.tally.plus(p.mass(outcome, at_ms, self.at_ms));
    }

    fn at(&self, p: &Params, now_ms: i64) -> Tally {
        self.tally.scaled(p.decay(now_ms - self.at_ms))
    }
}

/// Observations held in memory, with the same weighing as [`scores`]
/// (the simulation keeps one per client).
#[derive(Debug, Clone)]
pub struct Book {
    params: Params,
    me: String,
    first: HashMap<String, Decaying>,
    /// subject → attester → its evidence.
    third: HashMap<String, HashMap<String, Decaying>>,
    stakes: HashMap<String, f64>,
}

impl Book {
    /// An empty book of node `me`.
    pub fn new(params: Params, me: impl Into<String>) -> Book {
        Book {
            params,
            me: me.into(),
            first: HashMap::new(),
            third: HashMap::new(),
            stakes: HashMap::new(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Records that `attester` observed `outcome` of `subject` at `at_ms`
    /// (first-hand when `attester` is this node; a self-attestation is
    /// ignored).
    pub fn observe(&mut self, attester: &str, subject: &str, outcome: Outcome, at_ms: i64) {
        if attester == subject {
            return;
        }
        let p = self.params;
        let slot = if attester == self.me {
            self.first.entry(subject.to_string()).or_default()
        } else {
            self.third
                .entry(subject.to_string())
                .or_default()
                .entry(attester.to_string())
                .or_default()
        };
        slot.add(&p, outcome, at_ms);
    }

    /// Sets `peer`'s certified stake, USD.
    pub fn set_stake(&mut self, peer: &str, usd: f64) {
        self.stakes.insert(peer.to_string(), usd);
    }

    /// What this node holds of `attester` at `now_ms`.
    pub fn standing(&self, attester: &str, now_ms: i64) -> Standing {
        Standing {
            work: self
                .first
                .get(attester)
                .map(|d| d.at(&self.params, now_ms))
                .unwrap_or_default(),
            stake_usd: self.stakes.get(attester).copied().unwrap_or(0.0),
        }
    }

    /// `subject`'s score at `now_ms`.
    pub fn score(&self, subject: &str, now_ms: i64) -> Score {
        let p = &self.params;
        let first = self
            .first
            .get(subject)
            .map(|d| d.at(p, now_ms))
            .unwrap_or_default();
        let others = self.third.get(subject).into_iter().flat_map(|m| {
            m.iter()
                .filter(|(a, _)| a.as_str() != subject)
                .map(|(a, d)| (d.at(p, now_ms), self.standing(a, now_ms)))
        });
        combine(p, first, others)
    }
}

/// The scores of `subjects` in the view of node `me` at `now_ms`, from the
/// store: this node's attestations (first-hand), everyone's about each
/// subject, and the certified stakes peers advertised.
pub fn scores(
    store: &Store,
    me: &str,
    subjects: &[String],
    p: &Params,
    now_ms: i64,
) -> Result<Vec<Score>, StoreError> {
    let horizon = p.horizon(now_ms);
    let repo = store.attestations();
    let mut first: HashMap<String, Tally> = HashMap::new();
    for r in repo.by(me, horizon, MAX_FIRST_HAND)? {
        if let Ok(o) = r.outcome.parse::<Outcome>() {
            let t = first.entry(r.subject).or_default();
            *t = t.plus(p.mass(o, r.at_ms, now_ms));
        }
    }
    let stakes: HashMap<String, f64> = repo
        .stakes(now_ms.saturating_sub(STAKE_FRESH_MS))?
        .into_iter()
        .filter(|s| s.certified)
        .map(|s| (s.peer_id, usd(s.amount, &s.currency)))
        .collect();
    let standing = |a: &str| Standing {
        work: first.get(a).copied().unwrap_or_default(),
        stake_usd: stakes.get(a).copied().unwrap_or(0.0),
    };
    let mut out = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let mut by: HashMap<String, Tally> = HashMap::new();
        for r in repo.about(subject, horizon, MAX_PER_SUBJECT)? {
            if r.attester == me || r.attester == *subject {
                continue;
            }
            if let Ok(o) = r.outcome.parse::<Outcome>() {
                let t = by.entry(r.attester).or_default();
                *t = t.plus(p.mass(o, r.at_ms, now_ms));
            }
        }
        let own = first.get(subject).copied().unwrap_or_default();
        out.push(combine(
            p,
            own,
            by.into_iter().map(|(a, t)| (t, standing(&a))),
        ));
    }
    Ok(out)
}

/// `amount` minor units of `code` in USD at the built-in reference rates
/// (0 for a currency without one).
pub fn usd(amount: u64, code: &str) -> f64 {
    let (Ok(c), Ok(rate)) = (
        currency(code),
        FixedRates::default().micro_usd_per_unit(code),
    ) else {
        return 0.0;
    };
    amount as f64 * rate as f64 / 10f64.powi(i32::from(c.decimals)) / 1e6
}

/// The stake `advert`'s arbiter certificate vouches for, if the
/// certificate checks: signed by its arbiter, for the advertiser, by an
/// arbiter in `trusted` (this node's `[verify] referees`: one that can
/// slash it on a ruling this node would take), and not expired at
/// `now_ms`. Anything else — no certificate, a stranger's, a stale one —
/// is the provider's own claim, and counts nothing.
pub fn certified_stake(advert: &Advert, trusted: &[String], now_ms: u64) -> Option<Money> {
    let cert = advert.stake_cert.as_ref()?;
    let arbiter = cert.verify().ok()?.to_string();
    let c = &cert.payload;
    (c.provider == advert.peer_id
        && trusted.contains(&arbiter)
        && c.valid_until_ms > now_ms
        && c.amount.amount > 0)
        .then(|| c.amount.clone())
}

/// An attestation by `key`'s peer that `subject`'s result of `job_id` was
/// `outcome` (with the evidence's sha256 when it cheated), at `now_ms`.
pub fn sign(
    key: &Keypair,
    subject: &str,
    job_id: &str,
    outcome: Outcome,
    evidence: Option<String>,
    now_ms: u64,
) -> Result<SignedAttestation, ReputationError> {
    let attestation = Attestation {
        subject: subject.to_string(),
        job_id: job_id.to_string(),
        outcome,
        evidence: match outcome {
            Outcome::Cheated => evidence,
            Outcome::Verified => None,
        },
        attester: key.public().to_peer_id().to_string(),
        timestamp_ms: now_ms,
    };
    Ok(SignedAttestation::sign(attestation, key)?)
}

/// Keeps an attestation (this node's own, or one that passed the gossip
/// gate) as a row; `false` when its (attester, job) was already kept.
pub fn record(
    store: &Store,
    signed: &SignedAttestation,
    received_ms: i64,
) -> Result<bool, ReputationError> {
    let a: &Attestation = &signed.payload;
    let bytes = encode(signed).map_err(|e| ReputationError::Encoding(e.to_string()))?;
    Ok(store.attestations().insert(&AttestationRecord {
        attester: a.attester.clone(),
        job_id: a.job_id.clone(),
        subject: a.subject.clone(),
        outcome: a.outcome.as_str().to_string(),
        evidence: a.evidence.clone(),
        at_ms: i64::try_from(a.timestamp_ms).unwrap_or(i64::MAX),
        received_ms,
        signed: bytes,
    })?)
}

/// A stored row's signed attestation, decoded and checked again.
pub fn signed_of(row: &AttestationRecord) -> Result<SignedAttestation, ReputationError> {
    let signed: SignedAttestation =
        decode(&row.signed).map_err(|e| ReputationError::Encoding(e.to_string()))?;
    signed.verify()?;
    Ok(signed)
}

/// The evidence hash of a file's bytes (what a `cheated` attestation names).
pub fn evidence_hash(bytes: &[u8]) -> String {
    sha256_hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const WEEK: i64 = 7 * 86_400_000;

    fn p() -> Params {
        Params::default()
    }

    fn first(ok: f64, bad_cheats: f64) -> Tally {
        Tally {
            ok,
            bad: bad_cheats * p().cheat_weight,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn observations_halve_every_half_life() {
        let p = p();
        assert!(close(p.decay(0), 1.0));
        assert!(close(p.decay(WEEK), 0.5));
        assert!(close(p.decay(2 * WEEK), 0.25));
        assert!(close(p.decay(-WEEK), 1.0), "a clock ahead counts as new");
        let m = p.mass(Outcome::Cheated, NOW - WEEK, NOW);
        assert!(close(m.bad, 10.0) && m.ok == 0.0, "{m:?}");
        assert_eq!(p.horizon(NOW), NOW - 10 * WEEK);
        // The book decays the same way, incrementally.
        let mut book = Book::new(p, "me");
        book.observe("me", "s", Outcome::Verified, NOW - 2 * WEEK);
        book.observe("me", "s", Outcome::Verified, NOW - WEEK);
        let s = book.score("s", NOW);
        assert!(close(s.first_hand.ok, 0.25 + 0.5), "{s:?}");
    }

    #[test]
    fn the_score_is_a_lower_bound_so_few_observations_do_not_outrank_many() {
        let p = p();
        let stranger = Score::stranger(&p);
        assert!(close(stranger.mean, 0.5));
        assert!((stranger.lower - 0.3557).abs() < 1e-3, "{stranger:?}");
        // More verified work, higher score; never above 1.
        let mut last = stranger.lower;
        for n in [1.0, 2.0, 5.0, 20.0, 100.0, 1e6] {
            let s = Score::of(&p, first(n, 0.0), Tally::default());
            assert!(s.lower > last && s.lower <= 1.0, "{n}: {s:?}");
            last = s.lower;
        }
        // One success (mean 0.67) against a long record with a decayed
        // cheat in it (mean 0.64): the long record ranks first.
        let lucky = Score::of(&p, first(1.0, 0.0), Tally::default());
        let proven = Score::of(&p, Tally { ok: 15.0, bad: 8.0 }, Tally::default());
        assert!(lucky.mean > proven.mean);
        assert!(proven.lower > lucky.lower, "{proven:?} vs {lucky:?}");
    }

    #[test]
    fn a_proven_cheat_weighs_twenty_successes_and_is_forgiven_slowly() {
        let p = p();
        assert_eq!(p.cheat_weight, 20.0);
        // Ten verified jobs, then caught once: below a stranger, and barred.
        let s = Score::of(&p, first(10.0, 1.0), Tally::default());
        assert!(close(s.mean, 11.0 / 32.0), "{s:?}");
        assert!(s.lower < Score::stranger(&p).lower);
        assert!(s.barred);
        // However long its record: a first-hand ruling bars it.
        assert!(Score::of(&p, first(1000.0, 1.0), Tally::default()).barred);
        // Caught with no record: barred, for about a month.
        let mut book = Book::new(p, "me");
        book.observe("me", "c", Outcome::Cheated, NOW);
        assert!(book.score("c", NOW).barred);
        assert!(book.score("c", NOW).lower < 0.05);
        assert!(book.score("c", NOW + 4 * WEEK).barred);
        let later = book.score("c", NOW + 5 * WEEK);
        assert!(
            !later.barred && later.lower < Score::stranger(&p).lower,
            "{later:?}"
        );
        // Others' word alone bars by the mean: cheating on one verified job
        // in four does, however long it works; one in ten only lowers it.
        let quarter = Score::of(&p, Tally::default(), first(300.0, 100.0));
        assert!(quarter.barred, "{quarter:?}");
        let tenth = Score::of(&p, Tally::default(), first(900.0, 100.0));
        assert!(!tenth.barred && tenth.lower < 0.35, "{tenth:?}");
    }

    #[test]
    fn an_attester_weighs_by_its_work_and_certified_stake_here_and_a_fresh_one_by_nothing() {
        let p = p();
        let w = |ok: f64, cheats: f64, usd: f64| {
            attester_weight(
                &p,
                &Standing {
                    work: first(ok, cheats),
                    stake_usd: usd,
                },
            )
        };
        assert_eq!(w(0.0, 0.0, 0.0), 0.0, "a fresh identity");
        assert!(close(w(10.0, 0.0, 0.0), 0.25), "10 verified jobs: half");
        assert!(w(1000.0, 0.0, 0.0) <= 0.5 && w(1000.0, 0.0, 0.0) > 0.49);
        assert!(close(w(0.0, 0.0, 100.0), 0.125), "100 USD: half of 0.25");
        assert!(w(0.0, 0.0, 1e12) <= 0.25, "stake alone: at most 0.25");
        assert!(w(1000.0, 0.0, 1e12) <= 0.5, "never more than 0.5");
        assert_eq!(w(10.0, 1.0, 1000.0), 0.0, "caught cheating: no voice");
        assert!(w(10.0, 0.04, 0.0) > 0.2, "a ruling decayed to < 1 success");
        for bad in [f64::NAN, f64::INFINITY, -5.0] {
            let x = attester_weight(
                &p,
                &Standing {
                    work: Tally { ok: bad, bad },
                    stake_usd: bad,
                },
            );
            assert!((0.0..=0.5).contains(&x), "{bad}: {x}");
        }
    }

    #[test]
    fn a_swarm_of_fresh_identities_moves_no_score() {
        let p = p();
        let mut book = Book::new(p, "me");
        // This node verified the honest provider 5 times.
        for i in 0..5 {
            book.observe("me", "honest", Outcome::Verified, NOW - i);
        }
        let (honest, cheat) = (book.score("honest", NOW), book.score("cheat", NOW));
        // 1,000 fresh identities, 20 lies each: the cheat verified, the
        // honest provider cheated.
        for s in 0..1000 {
            let id = format!("sybil-{s}");
            for j in 0..20 {
                book.observe(&id, "cheat", Outcome::Verified, NOW - j);
                book.observe(&id, "honest", Outcome::Cheated, NOW - j);
            }
        }
        assert_eq!(book.score("honest", NOW), honest);
        assert_eq!(book.score("cheat", NOW), cheat);
        // They vouch for each other: still nothing (standing is first-hand).
        for s in 0..1000 {
            book.observe(
                &format!("sybil-{s}"),
                &format!("sybil-{}", (s + 1) % 1000),
                Outcome::Verified,
                NOW,
            );
        }
        assert_eq!(book.score("cheat", NOW), cheat);
        // With stake certified for each (a colluding arbiter): together no
        // more than `stake_only_cap` observations.
        for s in 0..1000 {
            book.set_stake(&format!("sybil-{s}"), 1e6);
        }
        let moved = book.score("cheat", NOW);
        assert!(
            close(moved.third_party.total(), p.stake_only_cap),
            "{moved:?}"
        );
        let proven = {
            let mut b = Book::new(p, "me");
            for i in 0..10 {
                b.observe("me", "x", Outcome::Verified, NOW - i);
            }
            b.score("x", NOW)
        };
        assert!(moved.lower < proven.lower, "{moved:?} vs {proven:?}");
    }

    #[test]
    fn one_attester_is_capped_and_first_hand_weighs_most() {
        let p = p();
        let mut book = Book::new(p, "me");
        // An attester this node verified 50 times (weight ~0.42).
        for i in 0..50 {
            book.observe("me", "trusted", Outcome::Verified, NOW - i);
        }
        for i in 0..20 {
            book.observe("me", "honest", Outcome::Verified, NOW - i);
        }
        let before = book.score("honest", NOW);
        // It claims 1,000 cheats by a provider this node verified 20 times.
        for j in 0..1000 {
            book.observe("trusted", "honest", Outcome::Cheated, NOW - j);
        }
        let after = book.score("honest", NOW);
        assert!(
            close(after.third_party.total(), p.per_attester_cap),
            "{after:?}"
        );
        assert!(after.lower < before.lower && !after.barred, "{after:?}");
        assert!(after.lower > 0.6, "{after:?}");
        // Its word about a stranger counts (capped): 4 cheats' worth.
        for j in 0..3 {
            book.observe("trusted", "stranger", Outcome::Cheated, NOW - j);
        }
        let s = book.score("stranger", NOW);
        assert!(close(s.third_party.bad, p.per_attester_cap), "{s:?}");
        assert!(s.lower < Score::stranger(&p).lower);
        // Every third party together counts less than one first-hand cheat.
        for a in 0..50 {
            let id = format!("t{a}");
            for i in 0..50 {
                book.observe("me", &id, Outcome::Verified, NOW - i);
            }
            for j in 0..5 {
                book.observe(&id, "c", Outcome::Verified, NOW - j);
            }
        }
        let praised = book.score("c", NOW);
        assert!(
            close(praised.third_party.ok, p.third_party_cap),
            "{praised:?}"
        );
        book.observe("me", "c", Outcome::Cheated, NOW);
        let caught = book.score("c", NOW);
        assert!(
            caught.mean < 0.4 && caught.lower < Score::stranger(&p).lower,
            "{caught:?}"
        );
    }

    #[test]
    fn scores_from_the_store_match_the_book() {
        use libp2p::identity::Keypair;
        let p = p();
        let store = Store::open_in_memory().unwrap();
        let (me, attester, sybil) = (
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
        );
        let id = |k: &Keypair| k.public().to_peer_id().to_string();
        let subject = libp2p::PeerId::random().to_string();
        let mut book = Book::new(p, id(&me));
        // The real clock: advertised stakes are read by when they were seen.
        let now_i = crate::store::now_ms();
        let now = now_i as u64;
        let mut put = |k: &Keypair, subject: &str, job: &str, o: Outcome, at: u64| {
            let ev = (o == Outcome::Cheated).then(|| evidence_hash(job.as_bytes()));
            let signed = sign(k, subject, job, o, ev, at).unwrap();
            assert!(record(&store, &signed, now_i).unwrap());
            assert!(!record(&store, &signed, now_i).unwrap(), "kept once");
            book.observe(&id(k), subject, o, at as i64);
        };
        for i in 0..12 {
            put(
                &me,
                &id(&attester),
                &format!("a{i}"),
                Outcome::Verified,
                now - i * 3_600_000,
            );
        }
        put(&me, &subject, "s1", Outcome::Verified, now - WEEK as u64);
        put(&attester, &subject, "x1", Outcome::Cheated, now - 1000);
        put(&attester, &subject, "x2", Outcome::Verified, now - 2000);
        put(&sybil, &subject, "y1", Outcome::Verified, now);
        let got = scores(&store, &id(&me), std::slice::from_ref(&subject), &p, now_i).unwrap();
        let want = book.score(&subject, now_i);
        assert!(close(got[0].mean, want.mean), "{got:?} vs {want:?}");
        assert!(close(got[0].lower, want.lower));
        assert!(got[0].third_party.bad > 0.0 && got[0].third_party.total() <= 4.0);
        // Uncertified stake counts nothing; certified stake does.
        let sybil_id = id(&sybil);
        store
            .attestations()
            .set_stake(&sybil_id, Some((1_000_000_000, "USD", false)))
            .unwrap();
        let claimed = scores(&store, &id(&me), std::slice::from_ref(&subject), &p, now_i).unwrap();
        assert_eq!(claimed, got);
        store
            .attestations()
            .set_stake(&sybil_id, Some((1_000_000_000, "USD", true)))
            .unwrap();
        let staked = scores(&store, &id(&me), std::slice::from_ref(&subject), &p, now_i).unwrap();
        assert!(staked[0].third_party.ok > got[0].third_party.ok);
        // Rows read back verify.
        for r in store.attestations().about(&subject, 0, 100).unwrap() {
            signed_of(&r).unwrap();
        }
        assert!((usd(1_000_000, "USD") - 1.0).abs() < 1e-9);
        assert!((usd(100_000_000, "BTC") - 60_000.0).abs() < 1e-6);
        assert_eq!(usd(5, "XYZ"), 0.0);
    }

    #[test]
    fn only_a_trusted_arbiters_current_certificate_certifies_a_stake() {
        use crate::p2p::protocol::PROTOCOL_VERSION;
        use crate::p2p::verification::{SignedStakeCert, StakeCert};
        use libp2p::identity::Keypair;
        let (provider, arbiter, stranger) = (
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
            Keypair::generate_ed25519(),
        );
        let id = |k: &Keypair| k.public().to_peer_id().to_string();
        let now = NOW as u64;
        let usd5 = Money {
            amount: 5_000_000,
            currency: "USD".into(),
        };
        let cert = |by: &Keypair, for_: &Keypair, until: u64| {
            SignedStakeCert::sign(
                StakeCert {
                    provider: id(for_),
                    arbiter: id(by),
                    adapter: "payment-ledger".into(),
                    escrow_id: "e1".into(),
                    amount: usd5.clone(),
                    valid_until_ms: until,
                },
                by,
            )
            .unwrap()
        };
        let advert = |c: Option<SignedStakeCert>| Advert {
            peer_id: id(&provider),
            addrs: vec![],
            models: vec![],
            quote: usd5.clone(),
            capacity: 1,
            wit_version: "0.2.0".into(),
            protocol_version: PROTOCOL_VERSION,
            stake: Some(usd5.clone()),
            stake_cert: c.map(Box::new),
            timestamp_ms: now,
            proofs: vec![],
            verifier: false,
            untraced: vec![],
        };
        let trusted = vec![id(&arbiter)];
        let good = advert(Some(cert(&arbiter, &provider, now + 1000)));
        assert_eq!(certified_stake(&good, &trusted, now), Some(usd5.clone()));
        for bad in [
            advert(None),
            advert(Some(cert(&stranger, &provider, now + 1000))),
            advert(Some(cert(&arbiter, &stranger, now + 1000))),
            advert(Some(cert(&arbiter, &provider, now - 1))),
        ] {
            assert_eq!(certified_stake(&bad, &trusted, now), None);
        }
        assert_eq!(certified_stake(&good, &[], now), None, "untrusted arbiter");
    }
}
