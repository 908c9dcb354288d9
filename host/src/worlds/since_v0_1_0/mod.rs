//! Contract `infernet:plugin@0.1.0`, frozen in `wit/since_v0.1.0/`: its
//! bindings, and a host side that delegates every import to the newest
//! contract's implementation ([`super::latest`]) with conversions at this
//! edge. What 0.1.0 lacks is filled in here, nowhere else:
//!
//! - its escrow record carries no beneficiary, so a 0.1.0 adapter's
//!   escrows come back with `beneficiary: None` and the adapter is granted
//!   config key `account` to vouch for foreign escrows itself
//!   (`worlds::payment`).
//!
//! Everything else in 0.1.0 is 0.2.0 under another version: the same
//! records, enums and functions.

mod delegate;

use super::latest;
use super::payment::{Escrow, EscrowState};

wasmtime::component::bindgen!({
    path: "../wit/since_v0.1.0",
    interfaces: "
        import infernet:plugin/types@0.1.0;
        import infernet:plugin/tensor@0.1.0;
        import infernet:plugin/models@0.1.0;
        import infernet:plugin/log@0.1.0;
        import infernet:plugin/progress@0.1.0;
        import infernet:plugin/config@0.1.0;
        import infernet:plugin/kv@0.1.0;
    ",
    with: {
        "infernet:plugin/tensor.tensor": crate::kernels::TensorRes,
        "infernet:plugin/tensor.sampler": crate::kernels::SamplerRes,
        "infernet:plugin/models.weights": crate::models::WeightsRes,
        "infernet:plugin/models.tokenizer": crate::models::TokenizerRes,
    },
    imports: { default: trappable },
});

/// The 0.1.0 `backend` world.
pub mod backend {
    wasmtime::component::bindgen!({
        world: "backend",
        path: "../wit/since_v0.1.0",
        with: {
            "infernet:plugin/types": crate::worlds::since_v0_1_0::infernet::plugin::types,
            "infernet:plugin/tensor": crate::worlds::since_v0_1_0::infernet::plugin::tensor,
            "infernet:plugin/models": crate::worlds::since_v0_1_0::infernet::plugin::models,
            "infernet:plugin/log": crate::worlds::since_v0_1_0::infernet::plugin::log,
            "infernet:plugin/progress": crate::worlds::since_v0_1_0::infernet::plugin::progress,
        },
        imports: { default: trappable },
    });
}

/// The 0.1.0 `pricing` world.
pub mod pricing {
    wasmtime::component::bindgen!({
        world: "pricing",
        path: "../wit/since_v0.1.0",
        with: {
            "infernet:plugin/types": crate::worlds::since_v0_1_0::infernet::plugin::types,
            "infernet:plugin/log": crate::worlds::since_v0_1_0::infernet::plugin::log,
            "infernet:plugin/config": crate::worlds::since_v0_1_0::infernet::plugin::config,
        },
        imports: { default: trappable },
    });
}

/// The 0.1.0 `payment` world.
pub mod payment {
    wasmtime::component::bindgen!({
        world: "payment",
        path: "../wit/since_v0.1.0",
        with: {
            "infernet:plugin/types": crate::worlds::since_v0_1_0::infernet::plugin::types,
            "infernet:plugin/log": crate::worlds::since_v0_1_0::infernet::plugin::log,
            "infernet:plugin/config": crate::worlds::since_v0_1_0::infernet::plugin::config,
            "infernet:plugin/kv": crate::worlds::since_v0_1_0::infernet::plugin::kv,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
        require_store_data_send: true,
        imports: { default: trappable },
    });
}

pub use infernet::plugin::types::Error;

use infernet::plugin::{config, kv, log, models, progress, tensor, types};
use payment::exports::infernet::plugin::payment_api as pay;

world_linkers!();

use infernet::plugin::log::Level as Level1;
use latest::infernet::plugin::log::Level as Level2;
use latest::Error as Error2;

same_enum!(Level1 <=> Level2 { Trace, Debug, Info, Warn, Error });

impl From<Error2> for Error {
    fn from(e: Error2) -> Error {
        match e {
            Error2::InvalidInput(m) => Error::InvalidInput(m),
            Error2::Unsupported(m) => Error::Unsupported(m),
            Error2::LimitExceeded(m) => Error::LimitExceeded(m),
            Error2::Internal(m) => Error::Internal(m),
        }
    }
}

impl From<Error> for Error2 {
    fn from(e: Error) -> Error2 {
        match e {
            Error::InvalidInput(m) => Error2::InvalidInput(m),
            Error::Unsupported(m) => Error2::Unsupported(m),
            Error::LimitExceeded(m) => Error2::LimitExceeded(m),
            Error::Internal(m) => Error2::Internal(m),
        }
    }
}

// ---- backend world

impl From<latest::F32Tensor> for types::F32Tensor {
    fn from(t: latest::F32Tensor) -> Self {
        types::F32Tensor {
            shape: t.shape,
            data: t.data,
        }
    }
}

impl From<types::F32Tensor> for latest::F32Tensor {
    fn from(t: types::F32Tensor) -> Self {
        latest::F32Tensor {
            shape: t.shape,
            data: t.data,
        }
    }
}

impl From<latest::JobInput> for types::JobInput {
    fn from(i: latest::JobInput) -> Self {
        use latest::JobInput as L;
        match i {
            L::Text(t) => types::JobInput::Text(t),
            L::Texts(t) => types::JobInput::Texts(t),
            L::Tokens(t) => types::JobInput::Tokens(t),
            L::Tensor(t) => types::JobInput::Tensor(t.into()),
            L::Bytes(b) => types::JobInput::Bytes(b),
        }
    }
}

impl From<latest::JobRequest> for types::JobRequest {
    fn from(j: latest::JobRequest) -> Self {
        types::JobRequest {
            id: j.id,
            model: j.model,
            input: j.input.into(),
            params: j.params,
        }
    }
}

impl From<types::JobOutput> for latest::JobOutput {
    fn from(o: types::JobOutput) -> Self {
        use types::JobOutput as O;
        match o {
            O::Text(t) => latest::JobOutput::Text(t),
            O::Embeddings(e) => latest::JobOutput::Embeddings(e),
            O::Logits(t) => latest::JobOutput::Logits(t.into()),
            O::Classes(c) => latest::JobOutput::Classes(c),
            O::Bytes(b) => latest::JobOutput::Bytes(b),
        }
    }
}

impl From<types::JobResult> for latest::JobResult {
    fn from(r: types::JobResult) -> Self {
        latest::JobResult {
            output: r.output.into(),
            usage: latest::Usage {
                input_tokens: r.usage.input_tokens,
                output_tokens: r.usage.output_tokens,
            },
        }
    }
}

impl From<types::BackendInfo> for latest::BackendInfo {
    fn from(i: types::BackendInfo) -> Self {
        latest::BackendInfo {
            name: i.name,
            version: i.version,
            tasks: i.tasks,
            architectures: i.architectures,
        }
    }
}

// ---- pricing world

impl From<latest::QuoteRequest> for types::QuoteRequest {
    fn from(q: latest::QuoteRequest) -> Self {
        types::QuoteRequest {
            model: q.model,
            input_tokens: q.input_tokens,
            max_output_tokens: q.max_output_tokens,
            estimated_ms: q.estimated_ms,
            queue_depth: q.queue_depth,
            load_permille: q.load_permille,
        }
    }
}

impl From<types::Money> for latest::Money {
    fn from(m: types::Money) -> Self {
        latest::Money {
            amount: m.amount,
            currency: m.currency,
        }
    }
}

impl From<latest::Money> for types::Money {
    fn from(m: latest::Money) -> Self {
        types::Money {
            amount: m.amount,
            currency: m.currency,
        }
    }
}

impl From<types::Quote> for latest::Quote {
    fn from(q: types::Quote) -> Self {
        latest::Quote {
            price: q.price.into(),
            valid_for_secs: q.valid_for_secs,
            breakdown: q.breakdown,
        }
    }
}

// ---- payment world

impl From<latest::EscrowRequest> for pay::EscrowRequest {
    fn from(r: latest::EscrowRequest) -> Self {
        pay::EscrowRequest {
            job_id: r.job_id,
            amount: r.amount.into(),
            depositor: r.depositor,
            beneficiary: r.beneficiary,
            arbiter: r.arbiter,
            expires_in_secs: r.expires_in_secs,
            metadata: r.metadata,
        }
    }
}

impl From<pay::CurrencyInfo> for latest::CurrencyInfo {
    fn from(c: pay::CurrencyInfo) -> Self {
        latest::CurrencyInfo {
            code: c.code,
            decimals: c.decimals,
        }
    }
}

use pay::EscrowStatus as EscrowStatus1;

same_enum!(EscrowStatus1 => EscrowState {
    Pending, Funded, Released, Settled, Refunded, Disputed, Expired,
});

/// A 0.1.0 escrow has no beneficiary: `None` (see the module doc).
impl From<pay::Escrow> for Escrow {
    fn from(e: pay::Escrow) -> Self {
        Escrow {
            id: e.id,
            status: e.status.into(),
            amount: e.amount.into(),
            deposit_address: e.deposit_address,
            expires_at: e.expires_at,
            beneficiary: None,
        }
    }
}
