//! Contract `infernet:plugin@0.2.4`, the newest: the bindings generated
//! from `wit/` and the host side of every imported interface. It serves
//! 0.2.0 to 0.2.3 components too: 0.2.1 only added functions
//! (`weights.files`, `weights.file`, `tokenizer.encode-truncated`,
//! `progress.emit-token-ids`), 0.2.2 a resource and functions (`qmatrix`,
//! `qlinear`, `weights.get-quantized`, `weights.format`), 0.2.3 two
//! imports of the backend world (`config`, `wasi:http/outgoing-handler`),
//! 0.2.4 a function (`tensor.attention`) and a guarantee (`cat` returns a
//! contiguous tensor), and wasmtime resolves a component's older `@0.2.x`
//! imports and exports to these semver-compatible `@0.2.4` ones. Older
//! contract versions (`since_v0_1_0`) delegate to the
//! implementations here.
//!
//! The shared interfaces (`types`, `tensor`, `models`, `log`, `progress`,
//! `config`, `kv`) are generated once, in this module; each world's
//! bindings reuse them through `with`, so there is one Rust type per WIT
//! type. Host traits are implemented on the capability views of
//! [`super::caps`], and each world links only the interfaces it imports.

mod host_ifaces;
mod models_host;
mod tensor_host;

wasmtime::component::bindgen!({
    path: "../wit",
    interfaces: "
        import infernet:plugin/types@0.2.4;
        import infernet:plugin/tensor@0.2.4;
        import infernet:plugin/models@0.2.4;
        import infernet:plugin/log@0.2.4;
        import infernet:plugin/progress@0.2.4;
        import infernet:plugin/config@0.2.4;
        import infernet:plugin/kv@0.2.4;
    ",
    with: {
        "infernet:plugin/tensor.tensor": crate::kernels::TensorRes,
        "infernet:plugin/tensor.sampler": crate::kernels::SamplerRes,
        "infernet:plugin/tensor.qmatrix": crate::kernels::QMatrixRes,
        "infernet:plugin/models.weights": crate::models::WeightsRes,
        "infernet:plugin/models.tokenizer": crate::models::TokenizerRes,
    },
    additional_derives: [PartialEq],
    imports: { default: trappable },
});

/// The `backend` world: exports `backend-api`, imports (0.2.3) `config`
/// and `wasi:http`.
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
            "infernet:plugin/config": crate::worlds::since_v0_2_0::infernet::plugin::config,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
        require_store_data_send: true,
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

use super::payment::EscrowState;

same_enum!(EscrowStatus => EscrowState {
    Pending, Funded, Released, Settled, Refunded, Disputed, Expired,
});

use infernet::plugin::{config, kv, log, models, progress, tensor, types};

world_linkers!();

/// `wasmtime::Result<Result<T, Error>>`: a trap, or a value for the plugin.
pub(crate) type Out<T> = wasmtime::Result<Result<T, Error>>;

/// A kernel the plugin called wrongly is the plugin's fault (`internal`,
/// "kernel <op>: ..."), not its client's: the plugin chose the shapes.
impl From<crate::kernels::KernelError> for Error {
    fn from(e: crate::kernels::KernelError) -> Self {
        match e {
            crate::kernels::KernelError::Invalid(m) => Error::Internal(format!("kernel {m}")),
            crate::kernels::KernelError::Limit(m) => Error::LimitExceeded(m),
        }
    }
}
