//! A hostile or hand-driven client: its own swarm and identity, speaking
//! raw `/infernet/job/2` messages to a provider (no `JobClient` between
//! the test and the wire), and the paid echo provider such tests attack.

use crate::net::{echo_provider_toml, with_ledger, NodeProc};
use infernet_host::p2p::libp2p::identity::Keypair;
use infernet_host::p2p::protocol::{now_ms, EscrowRef, PayTo};
use infernet_host::p2p::{
    load_or_create_identity, start, ErrorCode, JobBody, JobMessage, Money, NetworkConfig,
    NetworkHandle, PeerId, WireInput,
};
use std::path::{Path, PathBuf};

/// A paid echo provider serving models `echo` and `echo-2`.
pub fn paid_echo_provider(root: &Path) -> (NodeProc, PathBuf) {
    paid_echo_provider_with(root, |t| t)
}

/// [`paid_echo_provider`] with its config text edited by `edit` first.
pub fn paid_echo_provider_with(
    root: &Path,
    edit: impl FnOnce(String) -> String,
) -> (NodeProc, PathBuf) {
    let config = echo_provider_toml(root, "p0", 5, &[]);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "\n[pricing]",
        &format!(
            "\n[[backend.models]]\nid = \"echo-2\"\npath = {:?}\n\n[pricing]",
            root.join("echo-model")
        ),
        1,
    );
    std::fs::write(&config, edit(text)).unwrap();
    with_ledger(&config, root, "confirm = \"client\"");
    (NodeProc::start(&config), root.join("p0"))
}

/// A bare client: a swarm with its own identity, connected to `to`.
pub struct Peer {
    /// Its network.
    pub net: NetworkHandle,
    /// Its identity key (for signing receipts).
    pub key: Keypair,
    /// The provider it talks to.
    pub provider: PeerId,
}

impl Peer {
    pub async fn new(root: &Path, name: &str, to: &NodeProc) -> Peer {
        Peer::to(root, name, &to.addr, to.peer.parse().unwrap()).await
    }

    /// A bare client connected to the provider at `addr` (`.../p2p/<id>`).
    pub async fn to(root: &Path, name: &str, addr: &str, provider: PeerId) -> Peer {
        let dir = root.join(name);
        let net = start(NetworkConfig::loopback(&dir), None).await.unwrap();
        net.dial(addr.parse().unwrap()).await.unwrap();
        Peer {
            net,
            key: load_or_create_identity(&dir).unwrap(),
            provider,
        }
    }

    pub fn id(&self) -> String {
        self.net.peer_id().to_string()
    }

    pub async fn send(&self, body: JobBody) -> JobMessage {
        self.net
            .send_job(self.provider, JobMessage::new(body))
            .await
            .unwrap()
    }

    /// A quote for `job` (a client job id) on `model`, `max_out` tokens.
    pub async fn quote(&self, job: &str, model: &str, max_out: u32) -> (String, Money, Vec<PayTo>) {
        self.quote_for(job, model, 2, max_out).await
    }

    /// A quote claiming `input_tokens` of input.
    pub async fn quote_for(
        &self,
        job: &str,
        model: &str,
        input_tokens: u32,
        max_out: u32,
    ) -> (String, Money, Vec<PayTo>) {
        let reply = self
            .send(JobBody::QuoteRequest {
                job_id: job.into(),
                model: model.into(),
                input_tokens,
                max_output_tokens: max_out,
                params: vec![],
                input: None,
            })
            .await;
        match reply.body {
            JobBody::QuoteOffer {
                quote_id,
                price,
                pay_to,
                ..
            } => (quote_id, price, pay_to),
            other => panic!("expected a quote, got {other:?}"),
        }
    }

    /// Accepts with an escrow statement of `escrow_id` holding `price`.
    pub async fn accept(
        &self,
        wire: &str,
        quote_id: &str,
        price: &Money,
        pay_to: &[PayTo],
        escrow_id: &str,
    ) -> JobMessage {
        self.send(JobBody::Accept {
            job_id: wire.into(),
            quote_id: quote_id.into(),
            escrow: Some(EscrowRef {
                adapter: pay_to[0].adapter.clone(),
                escrow_id: escrow_id.into(),
                amount: price.clone(),
                depositor: self.id(),
                beneficiary: pay_to[0].beneficiary.clone(),
                expires_at_ms: now_ms() + 3_600_000,
            }),
        })
        .await
    }

    pub async fn run(&self, wire: &str, model: &str, max_tokens: Option<u32>) -> JobMessage {
        let params = max_tokens
            .map(|n| vec![("max_tokens".to_string(), n.to_string())])
            .unwrap_or_default();
        self.run_with(wire, model, "pay me", params).await
    }

    /// `Run` with this input text and these parameters, as given.
    pub async fn run_with(
        &self,
        wire: &str,
        model: &str,
        text: &str,
        params: Vec<(String, String)>,
    ) -> JobMessage {
        self.send(JobBody::Run {
            job_id: wire.into(),
            model: model.into(),
            input: WireInput::Text(text.into()),
            params,
            stream: false,
            proof: None,
        })
        .await
    }
}

/// Asserts a `PaymentRequired` refusal whose message contains `needle`.
pub fn refused(reply: &JobMessage, needle: &str) {
    refused_with(reply, ErrorCode::PaymentRequired, needle)
}

/// Asserts an `Error` with `code` whose message contains `needle`.
pub fn refused_with(reply: &JobMessage, code: ErrorCode, needle: &str) {
    match &reply.body {
        JobBody::Error(e) => {
            assert_eq!(e.code, code, "{e:?}");
            assert!(
                e.message.contains(needle),
                "`{needle}` not in: {}",
                e.message
            );
        }
        other => panic!("expected a refusal with `{needle}`, got {other:?}"),
    }
}

/// Asserts an `Ack`.
pub fn is_ack(reply: &JobMessage) {
    assert!(matches!(reply.body, JobBody::Ack { .. }), "{reply:?}");
}
