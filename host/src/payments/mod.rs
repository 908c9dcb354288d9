//! Payments (DESIGN §7): exact money ([`currency`], which is the SDK's
//! `infernet_plugin_api::money`, shared with the payment adapters: the
//! currency table, amounts in integer minor units, USD → currency
//! conversion through a rate source, fixed or [`rate_file`]), the node's
//! payment adapters ([`adapters`]) and host access to the ledger's balances
//! ([`ledger`]).
//! The escrow lifecycle plugs into the job state machine (`jobs::client::pay`,
//! `jobs::provider::pay`).

pub mod adapters;
pub mod ledger;
pub mod rate_file;

pub use adapters::{display, money_json, Adapter, Confirm, PayPlan, PaymentError, Payments};
pub use rate_file::FileRates;

/// Exact money: the one copy, in the plugin SDK.
pub use infernet_plugin_api::money as currency;

pub use currency::{
    convert_usd, currency, Amount, Currency, FixedRates, MoneyError, RateSource, CURRENCIES,
};
