//! Payments (DESIGN §7). Today: exact money ([`currency`]): the currency
//! table, amounts in integer minor units, and USD → currency conversion
//! through a rate source. The escrow lifecycle plugs into the `escrowed`
//! seam of the job state machine (see `jobs::client`).

pub mod adapters;
pub mod currency;
pub mod ledger;

pub use adapters::{display, Adapter, Confirm, PayPlan, PaymentError, Payments};

pub use currency::{
    convert_usd, currency, Amount, Currency, FixedRates, MoneyError, RateSource, CURRENCIES,
};
