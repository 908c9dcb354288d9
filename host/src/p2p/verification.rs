//! The messages of `/infernet/verify/1`: questions about a delivered job's
//! kernel trace (its tree's nodes, one call, the values of tensors it
//! made), the client's ticket that lets a referee ask them, and the
//! dispute a client puts to a referee with the evidence it gets back;
//! and the stake an arbiter holds for a provider (its certificate, and the
//! slash a ruling against that provider makes).
//! Trace leaves and revealed values travel as CBOR byte strings whose
//! layout `docs/PROTOCOL.md` gives (the `kernels` module decodes them: the
//! wire layer does not know kernel types).

use super::cbor::bytes;
use super::protocol::{EscrowRef, Money, SignedResult, WireInput};
use super::signed::{Signed, SignedPayload};
use serde::{Deserialize, Serialize};

/// Protocol id of trace questions and disputes.
pub const VERIFY_PROTOCOL: &str = "/infernet/verify/1";

/// Digests one reveal may ask for.
pub const MAX_REVEAL_DIGESTS: usize = 4096;

/// A 32-byte digest on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hash32(#[serde(with = "bytes32")] pub [u8; 32]);

mod bytes32 {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        super::bytes::serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        super::bytes::deserialize(d)?
            .try_into()
            .map_err(|_| serde::de::Error::custom("a digest is 32 bytes"))
    }
}

/// A question about one job's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceQuery {
    /// The top node of the trace tree.
    Top,
    /// The two children of node (`level`, `index`).
    Children {
        /// Level (leaves are 0).
        level: u32,
        /// Index on that level.
        index: u64,
    },
    /// The call at `index`.
    Leaf {
        /// Call index.
        index: u64,
    },
    /// The values of tensors with these digests made at or before call
    /// `until` (and the derived calls that made derived ones).
    Reveal {
        /// Wanted digests (at most [`MAX_REVEAL_DIGESTS`]).
        digests: Vec<Hash32>,
        /// Last call to look at.
        until: u64,
    },
}

/// An answer to a [`TraceQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceAnswer {
    /// Node hashes (one for `Top`, two for `Children`).
    Nodes(Vec<Hash32>),
    /// The call's leaf, CBOR (`None`: the trace ends before it).
    Leaf(#[serde(with = "opt_bytes")] Option<Vec<u8>>),
    /// Revealed values and derivations, CBOR of each.
    Values {
        /// Revealed tensors.
        values: Vec<ByteString>,
        /// Calls with derived digests.
        derivations: Vec<ByteString>,
    },
}

/// A byte string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteString(#[serde(with = "bytes")] pub Vec<u8>);

mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct B(#[serde(with = "super::bytes")] Vec<u8>);

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.clone().map(B).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<B>::deserialize(d)?.map(|b| b.0))
    }
}

/// A client's permission for a referee to question a provider about one
/// of the client's jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The provider's job id (the result's `job_id`).
    pub job_id: String,
    /// The client (the signer), peer id.
    pub client: String,
    /// The referee allowed to ask, peer id.
    pub referee: String,
    /// Not valid after this, ms since epoch.
    pub expires_ms: u64,
}

impl SignedPayload for Ticket {
    const DOMAIN: &'static str = "ticket/2";
    fn signer(&self) -> &str {
        &self.client
    }
}

/// A signed [`Ticket`].
pub type SignedTicket = Signed<Ticket>;

/// The job both results of a dispute claim to have run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Model id.
    pub model: String,
    /// Input, as the wire carries it.
    pub input: WireInput,
    /// Parameters.
    pub params: Vec<(String, String)>,
}

/// Client → referee: two results of one job that disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisputeRequest {
    /// The job.
    pub job: JobSpec,
    /// Both signed results.
    pub results: Vec<SignedResult>,
    /// A ticket per result, naming this referee.
    pub tickets: Vec<SignedTicket>,
    /// Where the client's share of a cheater's forfeited stake goes (an
    /// account at one of the referee's payment adapters). Absent: the
    /// ledger pays the account named by the client's peer id in the
    /// referee's books; other adapters keep the share with the arbiter
    /// until a later dispute of this client names an account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout: Option<PayoutTo>,
}

/// An account at one of an arbiter's payment adapters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutTo {
    /// The adapter (plugin name, e.g. `payment-ledger`).
    pub adapter: String,
    /// The account or address there.
    pub account: String,
}

/// Provider → arbiter: hold this stake for me (the arbiter creates the
/// escrow and alone holds its release token), report on it, or release it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StakeRequest {
    /// The arbiter's adapter to hold it through.
    pub adapter: String,
    /// How much.
    pub amount: Money,
    /// Where the deposit comes from and a withdrawal returns to (a chain
    /// address). The ledger ignores it: a provider's stake there is the
    /// account named by the provider's peer id in the arbiter's books.
    pub depositor: String,
    /// Withdraw: no new certificates; refunded once the last one expired.
    #[serde(default)]
    pub withdraw: bool,
}

/// Arbiter → provider: the stake as the arbiter holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StakeState {
    /// The adapter's escrow id.
    pub escrow_id: String,
    /// `pending` (send the deposit), `funded`, `withdrawing`, `refunded`,
    /// `slashed`.
    pub status: String,
    /// Amount held (or to deposit).
    pub amount: Money,
    /// Where to send the deposit, when the adapter has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deposit_address: Option<String>,
    /// The certificate to advertise, while funded and not withdrawing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<Box<SignedStakeCert>>,
    /// Why not yet (unbonding until …, waiting for the deposit, …).
    pub note: String,
}

/// The arbiter's statement that it holds a provider's stake (in adverts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StakeCert {
    /// The provider, peer id.
    pub provider: String,
    /// The arbiter (the signer), peer id.
    pub arbiter: String,
    /// The arbiter's adapter and escrow holding it.
    pub adapter: String,
    /// Escrow id there.
    pub escrow_id: String,
    /// Amount held.
    pub amount: Money,
    /// Not valid after this, ms since epoch; the arbiter keeps the stake
    /// at least a grace period longer, so a dispute about a job run under
    /// this certificate can still be ruled and slashed.
    pub valid_until_ms: u64,
}

impl SignedPayload for StakeCert {
    const DOMAIN: &'static str = "stake/1";
    fn signer(&self) -> &str {
        &self.arbiter
    }
}

/// A signed [`StakeCert`].
pub type SignedStakeCert = Signed<StakeCert>;

/// What a ruling did to a cheater's stake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlashReport {
    /// The cheater, peer id.
    pub provider: String,
    /// The stake's escrow (empty when none is held).
    pub escrow_id: String,
    /// The client's share.
    pub to_client: Money,
    /// The referee's share.
    pub to_referee: Money,
    /// `paid`, in progress (`forfeited`, `paying`), `no stake held`, or
    /// `already slashed` (a stake is forfeited once).
    pub status: String,
}

/// A client's statement that it paid a prepaid job that was not
/// delivered, to the arbiter holding the provider's stake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The provider's job id (wire id `<job>.<attempt>`).
    pub job_id: String,
    /// The client (the signer), peer id.
    pub client: String,
    /// The provider, peer id.
    pub provider: String,
    /// The arbiter asked, peer id.
    pub arbiter: String,
    /// The escrow the client released to the provider.
    pub escrow: EscrowRef,
    /// The provider's commitment to deliver this job for that escrow.
    pub commitment: SignedCommitment,
    /// Where the client's share of a forfeited stake goes (as in
    /// [`DisputeRequest::payout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout: Option<PayoutTo>,
    /// When, ms since epoch.
    pub timestamp_ms: u64,
}

impl SignedPayload for Claim {
    const DOMAIN: &'static str = "claim/1";
    fn signer(&self) -> &str {
        &self.client
    }
}

/// A signed [`Claim`].
pub type SignedClaim = Signed<Claim>;

/// A provider's commitment, given in answer to the `Accept` of a prepaid
/// offer: it runs job `job_id` for `client`, paid by escrow `escrow_id`,
/// and delivers once that escrow is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    /// The job (wire id).
    pub job_id: String,
    /// The client, peer id.
    pub client: String,
    /// The provider (the signer), peer id.
    pub provider: String,
    /// The adapter and its escrow id paying for it.
    pub adapter: String,
    /// Escrow id there.
    pub escrow_id: String,
    /// The escrow's amount.
    pub amount: Money,
    /// When, ms since epoch.
    pub timestamp_ms: u64,
}

impl SignedPayload for Commitment {
    const DOMAIN: &'static str = "commitment/1";
    fn signer(&self) -> &str {
        &self.provider
    }
}

/// A signed [`Commitment`].
pub type SignedCommitment = Signed<Commitment>;
