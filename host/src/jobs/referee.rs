//! A referee node: rules on a client's dispute between two results of one
//! job by questioning both providers over `/infernet/verify/1`
//! ([`RemoteParty`], with the client's tickets) and judging the first
//! diverging call on its own node (`verify::dispute`). It must be party to
//! neither result and serve the job's model with the plugin the results
//! name.

use crate::kernels::trace::{Digest, Leaf, Revealed};
use crate::node::Node;
use crate::p2p::protocol::{decode, now_ms, JobBody, JobMessage, SignedResult};
use crate::p2p::verification::{DisputeRequest, Hash32, SignedTicket, TraceAnswer, TraceQuery};
use crate::p2p::{NetworkHandle, PeerId};
use crate::verify::dispute::{self, Party, Reveal};
use crate::verify::evidence::Evidence;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long one question to a provider may take (a reveal replays the job).
pub const QUESTION_TIMEOUT: Duration = Duration::from_secs(120);

/// A provider questioned over the network, blocking (a dispute runs on a
/// blocking thread). A question that fails, times out or gets a malformed
/// answer counts as not answered.
pub struct RemoteParty {
    net: NetworkHandle,
    rt: tokio::runtime::Handle,
    peer: PeerId,
    job_id: String,
    ticket: SignedTicket,
    result: SignedResult,
}

impl RemoteParty {
    /// The provider that signed `result`, asked with `ticket`.
    pub fn new(
        net: NetworkHandle,
        rt: tokio::runtime::Handle,
        result: SignedResult,
        ticket: SignedTicket,
    ) -> Option<Self> {
        let peer = result.payload.provider.parse().ok()?;
        Some(RemoteParty {
            net,
            rt,
            peer,
            job_id: result.payload.job_id.clone(),
            ticket,
            result,
        })
    }

    fn ask(&self, query: TraceQuery) -> Option<TraceAnswer> {
        let msg = JobMessage::new(JobBody::Trace {
            job_id: self.job_id.clone(),
            query,
            ticket: Some(Box::new(self.ticket.clone())),
        });
        let reply = self
            .rt
            .block_on(tokio::time::timeout(
                QUESTION_TIMEOUT,
                self.net.verify_request(self.peer, msg),
            ))
            .ok()?
            .ok()?;
        match reply.body {
            JobBody::TraceAnswer { job_id, answer } if job_id == self.job_id => Some(answer),
            other => {
                tracing::debug!(peer = %self.peer, reply = ?other.job_id(), "trace question not answered");
                None
            }
        }
    }

    fn nodes(&self, query: TraceQuery, n: usize) -> Option<Vec<Digest>> {
        match self.ask(query)? {
            TraceAnswer::Nodes(v) if v.len() == n => Some(v.into_iter().map(|h| h.0).collect()),
            _ => None,
        }
    }
}

impl Party for RemoteParty {
    fn result(&self) -> &SignedResult {
        &self.result
    }

    fn top(&mut self) -> Option<Digest> {
        self.nodes(TraceQuery::Top, 1)?.first().copied()
    }

    fn children(&mut self, level: u32, index: u64) -> Option<(Digest, Digest)> {
        let v = self.nodes(TraceQuery::Children { level, index }, 2)?;
        Some((v[0], v[1]))
    }

    fn leaf(&mut self, index: u64) -> Option<Option<Leaf>> {
        match self.ask(TraceQuery::Leaf { index })? {
            TraceAnswer::Leaf(None) => Some(None),
            TraceAnswer::Leaf(Some(bytes)) => decode::<Leaf>(&bytes).ok().map(Some),
            _ => None,
        }
    }

    fn reveal(&mut self, digests: &[Digest], until: u64) -> Reveal {
        let query = TraceQuery::Reveal {
            digests: digests.iter().map(|d| Hash32(*d)).collect(),
            until,
        };
        match self.ask(query) {
            Some(TraceAnswer::Values {
                values,
                derivations,
            }) => Reveal {
                values: values
                    .iter()
                    .filter_map(|b| decode::<Revealed>(&b.0).ok())
                    .collect(),
                derivations: derivations
                    .iter()
                    .filter_map(|b| decode::<Leaf>(&b.0).ok())
                    .collect(),
            },
            _ => Reveal::default(),
        }
    }
}

/// A node's referee service.
pub struct Referee {
    node: Arc<Node>,
    me: PeerId,
    net: OnceLock<NetworkHandle>,
}

impl Referee {
    /// A referee judging on `node`, known on the network as `me`.
    pub fn new(node: Arc<Node>, me: PeerId) -> Self {
        Referee {
            node,
            me,
            net: OnceLock::new(),
        }
    }

    /// The network it questions providers over (set once the swarm runs).
    pub fn set_network(&self, net: NetworkHandle) {
        let _ = self.net.set(net);
    }

    /// That network, once set.
    pub fn network(&self) -> Option<NetworkHandle> {
        self.net.get().cloned()
    }

    /// Rules on `req` from client `from`: both results are the client's,
    /// signed by two other providers; each ticket is the client's, names
    /// this referee and one of the results' jobs.
    pub async fn rule(&self, from: PeerId, req: DisputeRequest) -> Result<Evidence, String> {
        let net = self
            .net
            .get()
            .cloned()
            .ok_or("the referee's network is not running yet")?;
        let [ra, rb] = <[SignedResult; 2]>::try_from(req.results)
            .map_err(|_| "a dispute carries two results".to_string())?;
        let [ta, tb] = <[SignedTicket; 2]>::try_from(req.tickets)
            .map_err(|_| "a dispute carries two tickets".to_string())?;
        let me = self.me.to_string();
        for (r, t) in [(&ra, &ta), (&rb, &tb)] {
            let provider = r
                .verify()
                .map_err(|e| format!("a result's signature: {e}"))?;
            if provider == self.me {
                return Err("this referee signed one of the results: ask another".into());
            }
            if r.payload.client.as_deref() != Some(from.to_string().as_str()) {
                return Err(format!("result {} is not for you", r.payload.job_id));
            }
            let signer = t
                .verify()
                .map_err(|e| format!("a ticket's signature: {e}"))?;
            let ok = signer == from
                && t.payload.referee == me
                && t.payload.job_id == r.payload.job_id
                && t.payload.expires_ms >= now_ms();
            if !ok {
                return Err(format!(
                    "the ticket for job {} is not yours for this referee, or has expired",
                    r.payload.job_id
                ));
            }
        }
        let node = self.node.clone();
        let rt = tokio::runtime::Handle::current();
        let job = req.job;
        let a = RemoteParty::new(net.clone(), rt.clone(), ra, ta).ok_or("bad provider id")?;
        let b = RemoteParty::new(net, rt, rb, tb).ok_or("bad provider id")?;
        tokio::task::spawn_blocking(move || {
            let (mut a, mut b) = (a, b);
            dispute::run(&job, &mut a, &mut b, &node, &me).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the dispute worker failed: {e}"))?
    }
}
