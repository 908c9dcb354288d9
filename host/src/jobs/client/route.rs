//! Routing a pipeline: the layer spans of a model on offer (span ids in
//! adverts, [`crate::models::span`]), the best provider of each, and a
//! chain of spans that covers every layer, chosen by an [`Objective`].
//! Spans may overlap; a chain uses spans that meet end to start.

use super::{ClientError, JobClient};
use crate::models::span::{parse_id, LayerSpan};
use crate::p2p::ProviderInfo;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// What a chain is chosen for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The least time per token: the smallest sum of measured round trips
    /// (a hop whose round trip is not measured yet counts
    /// [`UNMEASURED_RTT_MS`]), plus [`HOP_MS`] a hop, so fewer stages win
    /// a tie.
    #[default]
    Latency,
    /// The most tokens per second across sessions: the chain whose most
    /// loaded stage has the most free slots (advertised capacity less the
    /// jobs this client has in flight there); fewer stages win a tie.
    Throughput,
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latency" => Ok(Objective::Latency),
            "throughput" => Ok(Objective::Throughput),
            other => Err(format!(
                "`{other}` is not a routing objective; use `latency` or `throughput`"
            )),
        }
    }
}

/// What an unmeasured round trip counts as, ms.
pub const UNMEASURED_RTT_MS: u64 = 50;
/// What each stage adds to a chain's latency score besides its round trip, ms.
pub const HOP_MS: u64 = 1;

/// One stage of a chain: a span and the provider chosen for it.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The span id asked for (`<model>@a..b/n`).
    pub span_id: String,
    /// Its layers.
    pub span: LayerSpan,
    /// The provider.
    pub provider: PeerId,
    /// Its last measured round trip, ms.
    pub rtt_ms: Option<u64>,
    /// Its free slots as this client sees them.
    pub free: u32,
}

/// Every span of `model` offered, by span id.
pub(super) type Offers = BTreeMap<String, (LayerSpan, Vec<ProviderInfo>)>;

impl JobClient {
    /// The spans of `model` on offer and their providers, except `avoid`
    /// and, while another serves the span, providers proven to cheat.
    pub(super) async fn offers(
        &self,
        model: &str,
        avoid: &HashSet<PeerId>,
    ) -> Result<Offers, ClientError> {
        let adverts = self
            .inner
            .net
            .adverts()
            .await
            .map_err(ClientError::Network)?;
        let ids: HashSet<String> = adverts
            .iter()
            .flat_map(|a| a.models.iter())
            .filter(|m| parse_id(m).is_some_and(|(base, _)| base == model))
            .cloned()
            .collect();
        let mut offers = Offers::new();
        for id in ids {
            let Some((_, span)) = parse_id(&id) else {
                continue;
            };
            let providers: Vec<ProviderInfo> = self
                .inner
                .net
                .providers_of(&id)
                .await
                .map_err(ClientError::Network)?
                .into_iter()
                .filter(|p| !avoid.contains(&p.peer_id))
                .filter(|p| !p.advert.as_ref().is_some_and(|a| a.verifier))
                .collect();
            // As for a single job: a provider proven to cheat is not
            // used while another serves the span.
            let scores = self.inner.scores(&providers).await?;
            let bar = scores.iter().any(|s| !s.barred);
            let providers: Vec<ProviderInfo> = providers
                .into_iter()
                .zip(scores)
                .filter(|(_, s)| !(bar && s.barred))
                .map(|(p, _)| p)
                .collect();
            if !providers.is_empty() {
                offers.insert(id, (span, providers));
            }
        }
        Ok(offers)
    }

    /// The best provider of one span by `objective`.
    pub(super) fn best_hop(
        &self,
        id: &str,
        offer: &(LayerSpan, Vec<ProviderInfo>),
        objective: Objective,
    ) -> Option<Hop> {
        let (span, providers) = offer;
        let hops = providers.iter().map(|p| {
            let capacity = p.advert.as_ref().map_or(1, |a| a.capacity);
            Hop {
                span_id: id.to_string(),
                span: *span,
                provider: p.peer_id,
                rtt_ms: p.latency.map(|d| d.as_millis() as u64),
                free: capacity.saturating_sub(self.inner.load(&p.peer_id)),
            }
        });
        match objective {
            Objective::Latency => hops.min_by_key(|h| (hop_cost(h), std::cmp::Reverse(h.free))),
            Objective::Throughput => hops.max_by_key(|h| (h.free, std::cmp::Reverse(hop_cost(h)))),
        }
    }

    /// Whether `model` is to be run as a pipeline: no provider serves it
    /// whole and spans of it on offer cover every layer. Waits up to the
    /// discovery timeout for either, then fails as the ordinary job path
    /// does when nobody serves the model ([`ClientError::NoProviders`]).
    pub async fn pipeline_needed(&self, model: &str) -> Result<bool, ClientError> {
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.inner.cfg.discovery_timeout_ms);
        loop {
            let whole = self
                .inner
                .net
                .providers_of(model)
                .await
                .map_err(ClientError::Network)?;
            if !whole.is_empty() {
                return Ok(false);
            }
            let offers = self.offers(model, &HashSet::new()).await?;
            let hops: Vec<Hop> = offers
                .iter()
                .filter_map(|(id, o)| self.best_hop(id, o, Objective::Latency))
                .collect();
            if chain(&hops, Objective::Latency).is_some() {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                let adverts = self
                    .inner
                    .net
                    .adverts()
                    .await
                    .map_err(ClientError::Network)?;
                let mut available: Vec<String> =
                    adverts.into_iter().flat_map(|a| a.models).collect();
                available.sort();
                available.dedup();
                return Err(ClientError::NoProviders {
                    model: model.into(),
                    waited_ms: self.inner.cfg.discovery_timeout_ms,
                    available,
                });
            }
            tokio::time::sleep(super::DISCOVERY_RETRY).await;
        }
    }

    /// A chain of spans of `model` covering all its layers, best by
    /// `objective`, avoiding `avoid`; spans are learnt from gossiped
    /// adverts, so this waits up to the discovery timeout for a chain.
    pub async fn route(
        &self,
        model: &str,
        objective: Objective,
        avoid: &HashSet<PeerId>,
    ) -> Result<Vec<Hop>, ClientError> {
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.inner.cfg.discovery_timeout_ms);
        loop {
            let offers = self.offers(model, avoid).await?;
            let hops: Vec<Hop> = offers
                .iter()
                .filter_map(|(id, offer)| self.best_hop(id, offer, objective))
                .collect();
            if let Some(found) = chain(&hops, objective) {
                return Ok(found);
            }
            if tokio::time::Instant::now() >= deadline {
                let mut spans: Vec<String> = hops.iter().map(|h| h.span_id.clone()).collect();
                spans.dedup();
                return Err(ClientError::NoPipeline {
                    model: model.into(),
                    spans,
                });
            }
            tokio::time::sleep(super::DISCOVERY_RETRY).await;
        }
    }
}

fn hop_cost(h: &Hop) -> u64 {
    h.rtt_ms.unwrap_or(UNMEASURED_RTT_MS) + HOP_MS
}

/// The best chain from layer 0 to the last through `hops` (one per span),
/// spans meeting end to start; `None` when no chain covers every layer.
pub fn chain(hops: &[Hop], objective: Objective) -> Option<Vec<Hop>> {
    let total = hops.first()?.span.total;
    if hops.iter().any(|h| h.span.total != total) {
        // Two layer counts for one model id: not one model.
        return None;
    }
    // best[l]: the best chain's score ending at layer boundary l, and its
    // last hop. Spans go forward, so one pass over boundaries in order.
    // Scores compare as tuples, smaller better.
    let score = |prev: (u64, u32), h: &Hop| -> (u64, u32) {
        match objective {
            Objective::Latency => (prev.0 + hop_cost(h), prev.1 + 1),
            // u64::MAX - bottleneck: smaller is more free slots.
            Objective::Throughput => (prev.0.max(u64::MAX - u64::from(h.free)), prev.1 + 1),
        }
    };
    let mut best: Vec<Option<((u64, u32), usize)>> = vec![None; total as usize + 1];
    let start = (0u64, 0u32);
    for at in 0..total as usize {
        let here = if at == 0 {
            Some(start)
        } else {
            best[at].map(|(s, _)| s)
        };
        let Some(here) = here else { continue };
        for (i, h) in hops.iter().enumerate() {
            if h.span.start as usize != at {
                continue;
            }
            let s = score(here, h);
            let end = h.span.end as usize;
            if best[end].is_none_or(|(b, _)| s < b) {
                best[end] = Some((s, i));
            }
        }
    }
    let mut chain = Vec::new();
    let mut at = total as usize;
    while at > 0 {
        let (_, i) = best[at]?;
        chain.push(hops[i].clone());
        at = hops[i].span.start as usize;
    }
    chain.reverse();
    Some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(a: u32, b: u32, rtt: Option<u64>, free: u32) -> Hop {
        let span = LayerSpan {
            start: a,
            end: b,
            total: 6,
        };
        Hop {
            span_id: span.id("m"),
            span,
            provider: PeerId::random(),
            rtt_ms: rtt,
            free,
        }
    }

    fn spans(c: &[Hop]) -> Vec<(u32, u32)> {
        c.iter().map(|h| (h.span.start, h.span.end)).collect()
    }

    #[test]
    fn chains_cover_every_layer_by_objective() {
        // 0..3 3..6 (slow, busy) | 0..2 2..4 4..6 (fast, free) | 2..6 overlaps.
        let hops = [
            hop(0, 3, Some(40), 1),
            hop(3, 6, Some(40), 1),
            hop(0, 2, Some(2), 4),
            hop(2, 4, Some(2), 4),
            hop(4, 6, Some(2), 4),
            hop(2, 6, Some(30), 2),
        ];
        assert_eq!(
            spans(&chain(&hops, Objective::Latency).unwrap()),
            [(0, 2), (2, 4), (4, 6)]
        );
        assert_eq!(
            spans(&chain(&hops, Objective::Throughput).unwrap()),
            [(0, 2), (2, 4), (4, 6)]
        );
        // Equal round trips: fewer hops win.
        let even = [
            hop(0, 3, Some(5), 1),
            hop(3, 6, Some(5), 1),
            hop(0, 2, Some(5), 1),
            hop(2, 4, Some(5), 1),
            hop(4, 6, Some(5), 1),
        ];
        assert_eq!(
            spans(&chain(&even, Objective::Latency).unwrap()),
            [(0, 3), (3, 6)]
        );
        // The bottleneck decides throughput: 0..2 has 1 free slot.
        let busy = [
            hop(0, 2, Some(1), 1),
            hop(2, 6, Some(1), 9),
            hop(0, 4, Some(90), 5),
            hop(4, 6, Some(90), 5),
        ];
        assert_eq!(
            spans(&chain(&busy, Objective::Throughput).unwrap()),
            [(0, 4), (4, 6)]
        );
        assert_eq!(
            spans(&chain(&busy, Objective::Latency).unwrap()),
            [(0, 2), (2, 6)]
        );
        // A gap: no chain.
        assert!(chain(
            &[hop(0, 2, None, 1), hop(3, 6, None, 1)],
            Objective::Latency
        )
        .is_none());
        assert!(chain(&[], Objective::Latency).is_none());
    }
}
