//! Contract `infernet:plugin@0.2.0`, the newest: the bindings generated
//! from `wit/` and the host side of every imported interface. Older
//! contract versions (`since_v0_1_0`) delegate to the implementations
//! here.
//!
//! The shared interfaces (`types`, `tensor`, `models`, `log`, `progress`,
//! `config`, `kv`) are generated once, in this module; each world's
//! bindings reuse them through `with`, so there is one Rust type per WIT
//! type. Host traits are implemented on the capability views of
//! [`super::caps`], and each world links only the interfaces it imports.

mod host_ifaces;
mod models_host;
mod tensor_host;

use super::caps::{self, view, BackendState, PaymentState, PricingState};
use wasmtime::component::Linker;

wasmtime::component::bindgen!({
    path: "../wit",
    interfaces: "
        import infernet:plugin/types@0.2.0;
        import infernet:plugin/tensor@0.2.0;
        import infernet:plugin/models@0.2.0;
        import infernet:plugin/log@0.2.0;
        import infernet:plugin/progress@0.2.0;
        import infernet:plugin/config@0.2.0;
        import infernet:plugin/kv@0.2.0;
    ",
    with: {
        "infernet:plugin/tensor.tensor": crate::kernels::TensorRes,
        "infernet:plugin/tensor.sampler": crate::kernels::SamplerRes,
        "infernet:plugin/models.weights": crate::models::WeightsRes,
        "infernet:plugin/models.tokenizer": crate::models::TokenizerRes,
    },
    additional_derives: [PartialEq],
    imports: { default: trappable },
});

/// The `backend` world: exports `backend-api`.
pub mod backend {
    wasmtime::component::bindgen!({
        world: "backend",
        path: "../wit",
        with: {
            "infernet:plugin/types": crate::worlds::since_v0_2_0::infernet::plugin::types,
            "infernet:plugin/tensor": crate::worlds::since_v0_2_0::infernet::plugin::tensor,
            "infernet:plugin/models": crate::worlds::since_v0_2_0::infernet::plugin::models,
            "infernet:plugin/log": crate::worlds::since_v0_2_0::infernet::plugin::log,
            "infernet:plugin/progress": crate::worlds::since_v0_2_0::infernet::plugin::progress,
        },
        imports: { default: trappable },
    });
}

/// The `pricing` world: exports `pricing-api`.
pub mod pricing {
    wasmtime::component::bindgen!({
        world: "pricing",
        path: "../wit",
        with: {
            "infernet:plugin/types": crate::worlds::since_v0_2_0::infernet::plugin::types,
            "infernet:plugin/log": crate::worlds::since_v0_2_0::infernet::plugin::log,
            "infernet:plugin/config": crate::worlds::since_v0_2_0::infernet::plugin::config,
        },
        imports: { default: trappable },
    });
}

/// The `payment` world: exports `payment-api`, imports `wasi:http`.
pub mod payment {
    wasmtime::component::bindgen!({
        world: "payment",
        path: "../wit",
        with: {
            "infernet:plugin/types": crate::worlds::since_v0_2_0::infernet::plugin::types,
            "infernet:plugin/log": crate::worlds::since_v0_2_0::infernet::plugin::log,
            "infernet:plugin/config": crate::worlds::since_v0_2_0::infernet::plugin::config,
            "infernet:plugin/kv": crate::worlds::since_v0_2_0::infernet::plugin::kv,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
        additional_derives: [PartialEq],
        require_store_data_send: true,
        imports: { default: trappable },
    });
}

pub use infernet::plugin::types::{
    BackendInfo, Error, F32Tensor, JobInput, JobOutput, JobRequest, JobResult, Money, Quote,
    QuoteRequest, Usage,
};
pub use payment::exports::infernet::plugin::payment_api::{
    CurrencyInfo, Escrow, EscrowRequest, EscrowStatus,
};

use infernet::plugin::{config, kv, log, models as wit_models, progress, tensor, types};

/// Links what a 0.2.0 backend imports: `types`, `tensor`, `models`, `log`, `progress`.
pub fn add_backend(linker: &mut Linker<BackendState>) -> wasmtime::Result<()> {
    types::add_to_linker::<_, caps::Log>(linker, view::log)?;
    tensor::add_to_linker::<_, caps::Kernels>(linker, view::kernels)?;
    wit_models::add_to_linker::<_, caps::Models>(linker, view::models)?;
    log::add_to_linker::<_, caps::Log>(linker, view::log)?;
    progress::add_to_linker::<_, caps::Progress>(linker, view::progress)
}

/// Links what a 0.2.0 pricing plugin imports: `types`, `log`, `config`.
pub fn add_pricing(linker: &mut Linker<PricingState>) -> wasmtime::Result<()> {
    types::add_to_linker::<_, caps::Log>(linker, view::log)?;
    log::add_to_linker::<_, caps::Log>(linker, view::log)?;
    config::add_to_linker::<_, caps::Config>(linker, view::pricing_config)
}

/// Links what a 0.2.0 payment adapter imports: `types`, `log`, `config`,
/// `kv` and `wasi:http` (filtered by the adapter's allowed hosts).
pub fn add_payment(linker: &mut Linker<PaymentState>) -> wasmtime::Result<()> {
    types::add_to_linker::<_, caps::Log>(linker, view::log)?;
    log::add_to_linker::<_, caps::Log>(linker, view::log)?;
    config::add_to_linker::<_, caps::Config>(linker, view::payment_config)?;
    kv::add_to_linker::<_, caps::Kv>(linker, view::kv)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)
}

/// `wasmtime::Result<Result<T, Error>>`: a trap, or a value for the plugin.
pub(crate) type Out<T> = wasmtime::Result<Result<T, Error>>;

impl From<crate::kernels::KernelError> for Error {
    fn from(e: crate::kernels::KernelError) -> Self {
        match e {
            crate::kernels::KernelError::Invalid(m) => Error::InvalidInput(m),
            crate::kernels::KernelError::Limit(m) => Error::LimitExceeded(m),
        }
    }
}
