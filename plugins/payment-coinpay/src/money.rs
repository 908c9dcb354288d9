//! The currencies CoinPay's escrow API takes: the SDK's shared table
//! ([`infernet_plugin_api::money`]) without the `USD` quote unit, which is
//! no chain. Amounts are written and read with the SDK's exact decimals.

use infernet_plugin_api::money::{self, Currency, QUOTE_CURRENCY};
use infernet_plugin_api::{CurrencyInfo, Error};

pub use money::{from_decimal_truncating as from_decimal, to_decimal};

/// The chains CoinPay takes, from the shared table.
fn chains() -> impl Iterator<Item = &'static Currency> {
    money::CURRENCIES
        .iter()
        .filter(|c| c.code != QUOTE_CURRENCY)
}

/// The WIT list of supported currencies.
pub fn currency_infos() -> Vec<CurrencyInfo> {
    chains()
        .map(|c| CurrencyInfo {
            code: c.code.to_string(),
            decimals: c.decimals,
        })
        .collect()
}

/// Decimals of `code`, or `unsupported` naming the supported codes.
pub fn decimals(code: &str) -> Result<u8, Error> {
    chains()
        .find(|c| c.code == code)
        .map(|c| c.decimals)
        .ok_or_else(|| {
            let list: Vec<&str> = chains().map(|c| c.code).collect();
            Error::unsupported(format!(
                "currency `{code}` is not supported by the CoinPay adapter; supported: {}",
                list.join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quote_unit_is_not_a_chain() {
        assert!(decimals("USD").is_err());
        assert_eq!(decimals("BTC").unwrap(), 8);
        assert_eq!(decimals("USDC_POL").unwrap(), 6);
        assert_eq!(currency_infos().len(), money::CURRENCIES.len() - 1);
    }

    #[test]
    fn amounts_go_out_and_come_back_exactly() {
        assert_eq!(to_decimal(150_000_000, 8), "1.5");
        assert_eq!(from_decimal("1.5", 8), Some(150_000_000));
        assert_eq!(
            from_decimal("0.0000019", 6),
            Some(1),
            "extra digits round down"
        );
    }
}
