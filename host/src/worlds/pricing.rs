//! The `pricing` world's facade: a fresh store per quote, metered by fuel,
//! so a pricing plugin is pure, bounded and cannot keep state between quotes.

use super::caps::{ConfigGrant, PricingCaps, PricingState};
use super::{guest_error, instance_pre, latest, link_err, since_v0_1_0 as v0_1, Contract};
use crate::runtime::{classify_trap, new_store, Limits, LoadedComponent, PluginError, Runtime};
use std::collections::BTreeMap;

pub use latest::{Quote, QuoteRequest};

#[derive(Clone)]
enum Pre {
    V0_1(v0_1::pricing::PricingPre<PricingState>),
    V0_2(latest::pricing::PricingPre<PricingState>),
}

/// A loaded pricing plugin with its config table.
#[derive(Clone)]
pub struct PricingPlugin {
    name: String,
    pre: Pre,
    limits: Limits,
    config: BTreeMap<String, String>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
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
        let pre = match Contract::of(loaded)? {
            Contract::V0_1 => {
                let ip = instance_pre(runtime, loaded, v0_1::add_pricing)?;
                Pre::V0_1(v0_1::pricing::PricingPre::new(ip).map_err(link_err(&name))?)
            }
            Contract::V0_2 => {
                let ip = instance_pre(runtime, loaded, latest::add_pricing)?;
                Pre::V0_2(latest::pricing::PricingPre::new(ip).map_err(link_err(&name))?)
            }
        };
        Ok(PricingPlugin {
            name,
            pre,
            limits,
            config,
            metrics: runtime.metrics().clone(),
        })
    }

    /// Prices one job in a fresh, fuel-metered store.
    pub fn quote(&self, request: &QuoteRequest) -> Result<Quote, PluginError> {
        let caps = PricingCaps {
            config: ConfigGrant {
                values: self.config.clone(),
                secrets: BTreeMap::new(),
                generated: BTreeMap::new(),
            },
        };
        let state = PricingState::new(&self.name, self.limits, caps);
        let world = crate::metrics::world::PRICING;
        self.metrics.plugin_call(&self.name, world);
        let trapped = |e: PluginError| {
            self.metrics.plugin_trap(&self.name, world, e.trap_reason());
            e
        };
        let result = match &self.pre {
            Pre::V0_1(pre) => {
                let mut store = new_store(pre.engine(), state, self.limits.fuel);
                let r = pre.instantiate(&mut store).and_then(|p| {
                    p.infernet_plugin_pricing_api()
                        .call_price(&mut store, &request.clone().into())
                });
                r.map(|r| r.map(Into::into).map_err(Into::into))
                    .map_err(|trap| trapped(classify_trap(&store, trap)))
            }
            Pre::V0_2(pre) => {
                let mut store = new_store(pre.engine(), state, self.limits.fuel);
                let r = pre.instantiate(&mut store).and_then(|p| {
                    p.infernet_plugin_pricing_api()
                        .call_price(&mut store, request)
                });
                r.map_err(|trap| trapped(classify_trap(&store, trap)))
            }
        };
        result?.map_err(|e| guest_error(&self.name, e))
    }
}
