//! The `pricing` world: a fresh store per quote, metered by fuel, so a
//! pricing plugin is pure, bounded and cannot keep state between quotes.

use super::backend::guest_error;
use super::{classify_trap, instance_pre, link_err, new_store};
use crate::kernels::KernelCtx;
use crate::models::ModelGrants;
use crate::runtime::{Limits, LoadedComponent, PluginError, PluginState, Runtime};
use std::collections::BTreeMap;
use wasmtime::component::HasSelf;

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
        let instance_pre = instance_pre(runtime, loaded, |linker| {
            bindings::Pricing::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)
        })?;
        let pre = bindings::PricingPre::new(instance_pre).map_err(link_err(&name))?;
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
        let mut store = new_store(self.pre.engine(), state, self.limits.fuel);
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
