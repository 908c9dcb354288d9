//! The node's payment adapters, loaded from `[[payment]]`: each plugin with
//! its account, its confirmation mode and the currencies it moves, plus the
//! rate source that turns USD quotes into the currency a client pays in.
//! Everything here blocks (plugin calls may do HTTP): async callers use
//! `spawn_blocking`.

use super::currency::{convert_usd, currency, Amount, FixedRates, MoneyError, RateSource};
use super::rate_file::FileRates;
use crate::config::Config;
use crate::p2p::protocol::PayTo;
use crate::runtime::{Package, PluginError, PluginKind, Runtime};
use crate::store::Store;
use crate::worlds::payment::{PaymentGrants, PaymentPlugin};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How a provider makes sure a client's escrow holds the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// Ask the adapter for the escrow's status (it must be `funded`).
    Status,
    /// Take the client's statement (a local ledger the provider cannot see).
    Client,
}

/// Why a payment step failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// A plugin failed or refused.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Money arithmetic or an unknown currency.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// The provider and the client share no adapter and currency.
    #[error(
        "no way to pay provider {provider}: it takes {offered}; this node pays through {ours}"
    )]
    NoCommonTerms {
        /// Provider.
        provider: String,
        /// What it offered.
        offered: String,
        /// What this node has.
        ours: String,
    },
    /// An escrow does not hold what it should.
    #[error("escrow {escrow_id} refused: {reason}")]
    EscrowRefused {
        /// The adapter's id.
        escrow_id: String,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// An adapter could not be set up (its key for data at rest).
    #[error("{0}")]
    Setup(String),
}

/// One configured adapter.
pub struct Adapter {
    /// The plugin.
    pub plugin: PaymentPlugin,
    /// This node's account at it.
    pub account: String,
    /// How this node (as a provider) confirms escrows made through it.
    pub confirm: Confirm,
    /// Currency codes it moves (those also in the host's currency table).
    pub currencies: Vec<String>,
}

/// The node's adapters and rate source.
pub struct Payments {
    adapters: Vec<Adapter>,
    rates: Box<dyn RateSource>,
}

/// What a client will pay through: adapter, currency, amount and payee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayPlan {
    /// Adapter name.
    pub adapter: String,
    /// Amount in minor units of `currency`.
    pub amount: u64,
    /// Currency code.
    pub currency: String,
    /// The provider's account there.
    pub beneficiary: String,
    /// This node's account there.
    pub depositor: String,
    /// The provider asks to be paid before the run (its stake is held).
    pub prepay: bool,
}

/// The secret an adapter encrypts what it keeps at rest with (CoinPay's
/// release tokens), `token_key`, when the config names none: derived from
/// the node-local secret (`<data_dir>/secret.key`) and the adapter's name,
/// so tokens are never stored in clear and survive restarts.
fn at_rest_key(
    config: &Config,
    adapter: &str,
    configured: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, PaymentError> {
    let mut generated = BTreeMap::new();
    if !configured.contains_key(AT_REST_SECRET) {
        let secret = crate::private::node_secret(&config.node.data_dir).map_err(|e| {
            PaymentError::Setup(format!("node secret for {adapter}'s data at rest: {e}"))
        })?;
        let key =
            crate::private::derive_key(&secret, &format!("payment/{adapter}/{AT_REST_SECRET}"));
        generated.insert(AT_REST_SECRET.to_string(), hex::encode(key));
    }
    Ok(generated)
}

/// The secret name adapters encrypt their data at rest with.
pub const AT_REST_SECRET: &str = "token_key";

impl Payments {
    /// Loads every `[[payment]]` plugin; `peer_id` is the default account.
    /// `None` when none is configured.
    pub fn load(
        config: &Config,
        runtime: &Runtime,
        store: &Arc<Store>,
        peer_id: &str,
    ) -> Result<Option<Payments>, PaymentError> {
        if config.payment.is_empty() {
            return Ok(None);
        }
        let mut adapters = Vec::new();
        for p in &config.payment {
            let package = Package::open(&p.plugin, p.publisher_key.as_deref())?;
            let loaded = runtime.load(&package, PluginKind::Payment)?;
            let account = p.account.clone().unwrap_or_else(|| peer_id.to_string());
            let grants = PaymentGrants {
                account: account.clone(),
                allowed_hosts: p.allowed_hosts.clone(),
                config: crate::config::flatten_table(&p.config),
                secrets: p.secrets.clone(),
                generated: at_rest_key(config, &loaded.name, &p.secrets)?,
                kv: store.plugin_kv(&loaded.name),
            };
            let plugin = PaymentPlugin::new(runtime, &loaded, p.limits.limits(), grants)?;
            let currencies = plugin
                .currencies()?
                .into_iter()
                .filter(|c| currency(&c.code).is_ok_and(|known| known.decimals == c.decimals))
                .map(|c| c.code)
                .collect();
            let confirm = match p.confirm.as_deref() {
                Some("client") => Confirm::Client,
                _ => Confirm::Status,
            };
            tracing::info!(adapter = %plugin.name(), ?currencies, ?confirm, "payment adapter ready");
            adapters.push(Adapter {
                plugin,
                account,
                confirm,
                currencies,
            });
        }
        let rates = rate_source(&config.client)?;
        Ok(Some(Payments { adapters, rates }))
    }

    /// The adapters.
    pub fn adapters(&self) -> &[Adapter] {
        &self.adapters
    }

    /// The adapter named `name`.
    pub fn adapter(&self, name: &str) -> Option<&Adapter> {
        self.adapters.iter().find(|a| a.plugin.name() == name)
    }

    /// What a provider offers in its quotes.
    pub fn pay_to(&self) -> Vec<PayTo> {
        self.adapters
            .iter()
            .map(|a| PayTo {
                adapter: a.plugin.name().to_string(),
                beneficiary: a.account.clone(),
                currencies: a.currencies.clone(),
                prepay: false,
            })
            .collect()
    }

    /// `price` (minor units of `price_currency`) expressed in `target`: as is
    /// when the currencies match, converted from USD through the rate source
    /// (rounded up) otherwise.
    pub fn convert(
        &self,
        price: u64,
        price_currency: &str,
        target: &str,
    ) -> Result<u64, PaymentError> {
        if price_currency == target {
            return Ok(price);
        }
        if price_currency != "USD" {
            return Err(MoneyError::NoRate {
                source_name: format!("{} (quotes must be in USD to convert)", self.rates.name()),
                code: format!("{price_currency} -> {target}"),
            }
            .into());
        }
        Ok(convert_usd(u128::from(price), target, self.rates.as_ref())?.to_u64()?)
    }

    /// Chooses how to pay a quote of `price` `price_currency` to a provider
    /// offering `offered`: the first of our adapters the provider also
    /// uses, in `preferred` currency if given, else the quote's currency,
    /// else the first currency both sides take.
    pub fn plan(
        &self,
        provider: &str,
        offered: &[PayTo],
        price: u64,
        price_currency: &str,
        preferred: Option<&str>,
    ) -> Result<PayPlan, PaymentError> {
        for ours in &self.adapters {
            let Some(theirs) = offered.iter().find(|o| o.adapter == ours.plugin.name()) else {
                continue;
            };
            let shared = |c: &str| {
                ours.currencies.iter().any(|x| x == c) && theirs.currencies.iter().any(|x| x == c)
            };
            let currency = match preferred {
                Some(p) if shared(p) => Some(p.to_string()),
                Some(_) => None,
                None if shared(price_currency) => Some(price_currency.to_string()),
                None => ours.currencies.iter().find(|c| shared(c)).cloned(),
            };
            if let Some(currency) = currency {
                let amount = self.convert(price, price_currency, &currency)?;
                return Ok(PayPlan {
                    adapter: ours.plugin.name().to_string(),
                    amount,
                    currency,
                    beneficiary: theirs.beneficiary.clone(),
                    depositor: ours.account.clone(),
                    prepay: theirs.prepay,
                });
            }
        }
        let describe = |v: Vec<String>| {
            if v.is_empty() {
                "nothing".to_string()
            } else {
                v.join("; ")
            }
        };
        Err(PaymentError::NoCommonTerms {
            provider: provider.to_string(),
            offered: describe(
                offered
                    .iter()
                    .map(|o| format!("{} in {}", o.adapter, o.currencies.join("/")))
                    .collect(),
            ),
            ours: describe(
                self.adapters
                    .iter()
                    .map(|a| {
                        let cur = match preferred {
                            Some(p) => p.to_string(),
                            None => a.currencies.join("/"),
                        };
                        format!("{} in {cur}", a.plugin.name())
                    })
                    .collect(),
            ),
        })
    }
}

/// The rate source `[client] rate_source` names: the fixed table (with
/// `[client.rates]` over the built-in round rates) or a rates file.
fn rate_source(client: &crate::config::ClientConfig) -> Result<Box<dyn RateSource>, PaymentError> {
    match (client.rate_source, &client.rates_file) {
        (crate::config::RateSourceKind::File, Some(path)) => Ok(Box::new(FileRates::open(
            path,
            (client.rates_max_age_secs > 0)
                .then(|| std::time::Duration::from_secs(client.rates_max_age_secs)),
        )?)),
        _ => Ok(Box::new(
            FixedRates::default().with_overrides(
                client
                    .rates
                    .iter()
                    .map(|(code, rate)| (code.clone(), u128::from(*rate))),
            )?,
        )),
    }
}

/// `amount` minor units of `code` as JSON for people and scripts alike:
/// `{"amount": "0.00025", "currency": "USD", "minor": "250"}` (the decimal
/// exact; minor units as text, since wei overflow a JSON number's safe range).
/// Takes `u128` too, for sums of many `u64` amounts.
pub fn money_json(amount: impl Into<u128>, code: &str) -> serde_json::Value {
    let amount: u128 = amount.into();
    let decimals = super::currency::currency(code).map_or(0, |c| c.decimals);
    serde_json::json!({
        "amount": super::currency::to_decimal(amount, decimals),
        "currency": code,
        "minor": amount.to_string(),
    })
}

/// `amount` minor units of `code` written as a decimal (`0.000250 USD`).
pub fn display(amount: u64, code: &str) -> String {
    match Amount::from_minor(u128::from(amount), code) {
        Ok(a) => a.to_string(),
        Err(_) => format!("{amount} (minor units) {code}"),
    }
}
