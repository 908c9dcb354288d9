//! A job's budget as callers give it, an exact decimal amount of one
//! currency ([`Amount`]), and as the job keeps it: integer minor units of
//! that currency plus its code. Minor units never reach a caller.

use crate::payments::currency::Amount;

use super::{ClientError, InferOptions};

/// The budget in minor units and the currency quotes must be in. A budget
/// names its currency; `currency`, when also set, must be the same one.
pub(super) fn budget_in_minor_units(
    opts: &InferOptions,
) -> Result<(Option<u64>, Option<String>), ClientError> {
    let Some(budget) = opts.max_budget else {
        return Ok((None, opts.currency.clone()));
    };
    if let Some(c) = opts.currency.as_deref() {
        if c != budget.currency {
            return Err(ClientError::BadOptions(format!(
                "the budget is {budget} but quotes are asked in {c}: give the budget in {c}, or leave the currency out"
            )));
        }
    }
    let minor = budget
        .to_u64()
        .map_err(|e| ClientError::BadOptions(format!("budget {budget}: {e}")))?;
    Ok((Some(minor), Some(budget.currency.to_string())))
}

/// Serde for `Option<Amount>` as the text people write: `"0.01 USDC_SOL"`.
pub(super) mod budget_serde {
    use super::Amount;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Amount>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.serialize_some(&a.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Amount>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let (amount, code) = text.trim().split_once(' ').ok_or_else(|| {
            serde::de::Error::custom(format!(
                "budget `{text}`: write an amount and its currency, e.g. `0.01 USDC_SOL`"
            ))
        })?;
        Amount::parse(amount, code.trim())
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(budget: Option<(&str, &str)>, currency: Option<&str>) -> InferOptions {
        InferOptions {
            max_budget: budget.map(|(a, c)| Amount::parse(a, c).unwrap()),
            currency: currency.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn a_decimal_budget_becomes_exact_minor_units_of_its_currency() {
        // USDC_SOL has 6 decimals: 0.01 is 10 000 minor units, exactly.
        let (minor, code) = budget_in_minor_units(&opts(Some(("0.01", "USDC_SOL")), None)).unwrap();
        assert_eq!((minor, code.as_deref()), (Some(10_000), Some("USDC_SOL")));
        let (minor, code) =
            budget_in_minor_units(&opts(Some(("0.01", "USDC_SOL")), Some("USDC_SOL"))).unwrap();
        assert_eq!((minor, code.as_deref()), (Some(10_000), Some("USDC_SOL")));
        assert_eq!(
            budget_in_minor_units(&opts(None, Some("USD"))).unwrap(),
            (None, Some("USD".into()))
        );
    }

    #[test]
    fn a_budget_and_a_currency_that_disagree_are_refused_naming_both() {
        let e = budget_in_minor_units(&opts(Some(("0.01", "USDC_SOL")), Some("BTC")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("0.01 USDC_SOL") && e.contains("BTC"), "{e}");
    }

    #[test]
    fn a_budget_past_the_wire_range_is_refused() {
        let e = budget_in_minor_units(&opts(Some(("99999999999999999999999", "USD")), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("budget"), "{e}");
    }

    #[test]
    fn options_round_trip_the_budget_as_text() {
        let o = opts(Some(("0.000250", "USD")), None);
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["max_budget"], "0.00025 USD");
        let back: InferOptions = serde_json::from_value(json).unwrap();
        assert_eq!(back.max_budget, o.max_budget);
        let bad = serde_json::json!({"max_budget": "0.01"});
        assert!(serde_json::from_value::<InferOptions>(bad).is_err());
        let bad = serde_json::json!({"max_budget": "0.0000001 USD"});
        assert!(serde_json::from_value::<InferOptions>(bad).is_err());
    }
}
