//! One module per plugin world, one module per contract version.
//!
//! - [`backend`], [`pricing`], [`payment`]: the typed facades the rest of
//!   the node calls (`BackendInstance::execute`, `PricingPlugin::quote`,
//!   `PaymentPlugin::status`...). They take and return the newest
//!   contract's types and dispatch to whichever contract version the
//!   component was built against.
//! - [`since_v0_2_0`] (= [`latest`]): the bindings of `wit/` and the host
//!   side of every interface; [`since_v0_1_0`]: the frozen 0.1.0 contract
//!   (`wit/since_v0.1.0/`), whose host side delegates to the newest, with
//!   the conversions between the two at this edge (Zed's `extension_host`
//!   is the model).
//! - [`caps`]: each world's capabilities as small state structs, and the
//!   views the WIT host traits are implemented on.

/// `From` between two enums with the same cases: `A => B` one way, `A <=> B`
/// both. The contract modules convert WIT enums of different versions, and
/// WIT escrow states to [`payment::EscrowState`], with it.
macro_rules! same_enum {
    ($a:ident => $b:ident { $($case:ident),* $(,)? }) => {
        impl From<$a> for $b {
            fn from(x: $a) -> $b {
                match x { $($a::$case => $b::$case),* }
            }
        }
    };
    ($a:ident <=> $b:ident { $($case:ident),* $(,)? }) => {
        same_enum!($a => $b { $($case),* });
        same_enum!($b => $a { $($case),* });
    };
}

/// The linker functions of one contract version: each world links exactly
/// the interfaces its WIT imports, on the views of [`caps`]. Expanded inside
/// each `since_v*` module, where `types`, `tensor`, `models`, `log`,
/// `progress`, `config` and `kv` name that version's interfaces.
macro_rules! world_linkers {
    () => {
        /// Links what a backend imports: `types`, `tensor`, `models`, `log`,
        /// `progress`, and (0.2.3) `config` and `wasi:http`, filtered by
        /// the backend's allowed hosts (a 0.1 or 0.2.0–0.2.2 component
        /// imports neither; the extra definitions are unused).
        pub fn add_backend(
            linker: &mut wasmtime::component::Linker<$crate::worlds::caps::BackendState>,
        ) -> wasmtime::Result<()> {
            use $crate::worlds::caps::{self, view};
            types::add_to_linker::<_, caps::Log>(linker, view::log)?;
            tensor::add_to_linker::<_, caps::Kernels>(linker, view::kernels)?;
            models::add_to_linker::<_, caps::Models>(linker, view::models)?;
            log::add_to_linker::<_, caps::Log>(linker, view::log)?;
            progress::add_to_linker::<_, caps::Progress>(linker, view::progress)?;
            config::add_to_linker::<_, caps::Config>(linker, view::backend_config)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)
        }

        /// Links what a pricing plugin imports: `types`, `log`, `config`.
        pub fn add_pricing(
            linker: &mut wasmtime::component::Linker<$crate::worlds::caps::PricingState>,
        ) -> wasmtime::Result<()> {
            use $crate::worlds::caps::{self, view};
            types::add_to_linker::<_, caps::Log>(linker, view::log)?;
            log::add_to_linker::<_, caps::Log>(linker, view::log)?;
            config::add_to_linker::<_, caps::Config>(linker, view::pricing_config)
        }

        /// Links what a payment adapter imports: `types`, `log`, `config`,
        /// `kv` and `wasi:http` (filtered by the adapter's allowed hosts;
        /// the same wasi:http 0.2.x in every contract version).
        pub fn add_payment(
            linker: &mut wasmtime::component::Linker<$crate::worlds::caps::PaymentState>,
        ) -> wasmtime::Result<()> {
            use $crate::worlds::caps::{self, view};
            types::add_to_linker::<_, caps::Log>(linker, view::log)?;
            log::add_to_linker::<_, caps::Log>(linker, view::log)?;
            config::add_to_linker::<_, caps::Config>(linker, view::payment_config)?;
            kv::add_to_linker::<_, caps::Kv>(linker, view::kv)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)
        }
    };
}

pub mod backend;
pub mod caps;
pub mod http_filter;
pub mod payment;
pub mod pricing;
pub mod since_v0_1_0;
pub mod since_v0_2_0;

/// The newest contract's module.
pub use since_v0_2_0 as latest;

pub use backend::{BackendGrants, BackendInstance, BackendPlugin};
pub use caps::{ProgressEvent, ProgressSink};
pub use payment::PaymentPlugin;
pub use pricing::PricingPlugin;

use crate::runtime::{LoadedComponent, PluginError, PluginState, Runtime};
use semver::Version;
use wasmtime::component::{InstancePre, Linker};

/// The contract versions with a host module here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contract {
    /// `infernet:plugin@0.1.x`, frozen in `wit/since_v0.1.0/`.
    V0_1,
    /// `infernet:plugin@0.2.x`, the newest (`wit/`).
    V0_2,
}

impl Contract {
    /// The module serving the host contract version `loaded` was matched to.
    fn of(loaded: &LoadedComponent) -> Result<Contract, PluginError> {
        let v: &Version = &loaded.contract;
        match (v.major, v.minor) {
            (0, 1) => Ok(Contract::V0_1),
            (0, 2) => Ok(Contract::V0_2),
            _ => Err(PluginError::Link {
                name: loaded.name.clone(),
                reason: format!("no host module implements infernet:plugin@{v}"),
            }),
        }
    }
}

/// A `PluginError::Link` for plugin `name`.
pub(crate) fn link_err(name: &str) -> impl Fn(wasmtime::Error) -> PluginError + '_ {
    move |e| PluginError::Link {
        name: name.to_owned(),
        reason: format!("{e:#}"),
    }
}

/// Links `loaded` against WASI (an empty context) plus the world's own
/// imports, added by `add_world`, and pre-instantiates it.
pub(crate) fn instance_pre<W: Send + 'static>(
    runtime: &Runtime,
    loaded: &LoadedComponent,
    add_world: impl FnOnce(&mut Linker<PluginState<W>>) -> wasmtime::Result<()>,
) -> Result<InstancePre<PluginState<W>>, PluginError> {
    let mut linker: Linker<PluginState<W>> = Linker::new(runtime.engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err(&loaded.name))?;
    add_world(&mut linker).map_err(link_err(&loaded.name))?;
    linker
        .instantiate_pre(&loaded.component)
        .map_err(link_err(&loaded.name))
}

/// Renders an error value a plugin returned.
pub(crate) fn guest_error(name: &str, e: latest::Error) -> PluginError {
    let (kind, error) = match e {
        latest::Error::InvalidInput(m) => ("invalid-input", m),
        latest::Error::Unsupported(m) => ("unsupported", m),
        latest::Error::LimitExceeded(m) => ("limit-exceeded", m),
        latest::Error::Internal(m) => ("internal", m),
    };
    PluginError::Guest {
        name: name.into(),
        error: format!("{kind}: {error}"),
        kind,
    }
}
