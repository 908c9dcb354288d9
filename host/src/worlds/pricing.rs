//! The `pricing` world: a fresh store per quote, metered by fuel, so a
//! pricing plugin is pure, bounded and cannot keep state between quotes.

use super::backend::guest_error;
use super::classify_trap;
use crate::kernels::KernelCtx;
use crate::models::ModelGrants;
use crate::runtime::{Limits, LoadedComponent, PluginError, PluginState, Runtime};
use std::collections::BTreeMap;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::Store;

/// Generated host bindings of the `pricing` world.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "pricing",
        path: "../wit",
        with: {
            "infernet:plugin/types": crate::worlds::backend::bindings::infernet::plugin::types,
            "infernet:plugin/log": crate::worlds::backend::bindings::infernet::plugin::log,
        },
        imports: { default: trappable },
    });
}

pub use crate::worlds::backend::bindings::infernet::plugin::types::{Quote, QuoteRequest};

/// A loaded pricing plugin with its config table.
#[derive(Clone)]
pub struct PricingPlugin {
    name: String,
    pre: bindings::PricingPre<PluginState>,
    limits: Limits,
    config: BTreeMap<String, String>,
}

impl PricingPlugin {
    /// Links a loaded pricing component; `config` is what it reads via `config.get`.
    pub fn new(
        runtime: &Runtime,
        loaded: &LoadedComponent,
        limits: Limits,
        config: BTreeMap<String, String>,
    ) -> Result<Self, PluginError> {
        let name = loaded.name.clone();
        let link_err = |e: wasmtime::Error| PluginError::Link {
            name: name.clone(),
            reason: format!("{e:#}"),
        };
        let mut linker: Linker<PluginState> = Linker::new(runtime.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err)?;
        bindings::Pricing::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(link_err)?;
        let pre = bindings::PricingPre::new(
            linker
                .instantiate_pre(&loaded.component)
                .map_err(link_err)?,
        )
        .map_err(link_err)?;
        Ok(PricingPlugin {
            name,
            pre,
            limits,
            config,
        })
    }

    /// Prices one job in a fresh, fuel-metered store.
    pub fn quote(&self, request: &QuoteRequest) -> Result<Quote, PluginError> {
        let mut state = PluginState::new(
            &self.name,
            self.limits,
            KernelCtx::new(candle_core::Device::Cpu),
            ModelGrants::default(),
        );
        state.config = self.config.clone();
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.memory);
        store.set_fuel(self.limits.fuel).ok();
        store.set_epoch_deadline(crate::runtime::ticks(self.limits.wall_time));
        store.epoch_deadline_trap();
        let result = self.pre.instantiate(&mut store).and_then(|p| {
            p.infernet_plugin_pricing_api()
                .call_price(&mut store, request)
        });
        match result {
            Ok(Ok(q)) => Ok(q),
            Ok(Err(e)) => Err(guest_error(&self.name, e)),
            Err(trap) => Err(classify_trap(&store, trap)),
        }
    }
}
