//! A payment adapter built against the frozen contract
//! `infernet:plugin@0.1.0` (`wit/since_v0.1.0/`) with raw wit-bindgen
//! bindings and no SDK: the tests load it on the current host to show a
//! 0.1.0 adapter keeps working, and that the host still grants it what
//! 0.1.0 promised (config key `account`), since its escrow record cannot
//! carry a beneficiary.
//!
//! Escrows it creates are kept in its `kv` (`escrow/<id>`, a small text
//! record), funded at once, in `USD` only. It stands in for a payment
//! service with escrows it did not create through ids of the form
//! `ext:<beneficiary>:<amount>` (a funded USD escrow the "service" holds):
//! as 0.1.0 asked of adapters, `status` answers for such an escrow only when
//! it pays the granted `account`.

wit_bindgen::generate!({
    world: "payment",
    path: "../../wit/since_v0.1.0",
    generate_all,
});

use exports::infernet::plugin::payment_api::{
    CurrencyInfo, Escrow, EscrowRequest, EscrowStatus, Guest,
};
use infernet::plugin::types::{Error, Money};
use infernet::plugin::{config, kv};

struct LegacyPay;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn status_name(s: EscrowStatus) -> &'static str {
    match s {
        EscrowStatus::Pending => "pending",
        EscrowStatus::Funded => "funded",
        EscrowStatus::Released => "released",
        EscrowStatus::Settled => "settled",
        EscrowStatus::Refunded => "refunded",
        EscrowStatus::Disputed => "disputed",
        EscrowStatus::Expired => "expired",
    }
}

fn parse_status(s: &str) -> Option<EscrowStatus> {
    [
        EscrowStatus::Pending,
        EscrowStatus::Funded,
        EscrowStatus::Released,
        EscrowStatus::Settled,
        EscrowStatus::Refunded,
        EscrowStatus::Disputed,
        EscrowStatus::Expired,
    ]
    .into_iter()
    .find(|x| status_name(*x) == s)
}

/// `id amount status expires_at` as stored.
fn save(e: &Escrow) -> Result<(), Error> {
    let text = format!(
        "{} {} {} {}",
        e.id,
        e.amount.amount,
        status_name(e.status),
        e.expires_at
    );
    kv::set(&format!("escrow/{}", e.id), text.as_bytes())
}

fn load(id: &str) -> Result<Option<Escrow>, Error> {
    let Some(bytes) = kv::get(&format!("escrow/{id}"))? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|_| Error::Internal("corrupt record".into()))?;
    let f: Vec<&str> = text.split(' ').collect();
    let corrupt = || Error::Internal(format!("corrupt record for `{id}`"));
    if f.len() != 4 {
        return Err(corrupt());
    }
    Ok(Some(Escrow {
        id: f[0].to_string(),
        status: parse_status(f[2]).ok_or_else(corrupt)?,
        amount: Money {
            amount: f[1].parse().map_err(|_| corrupt())?,
            currency: "USD".into(),
        },
        deposit_address: None,
        expires_at: f[3].parse().map_err(|_| corrupt())?,
    }))
}

fn known(id: &str) -> Result<Escrow, Error> {
    load(id)?.ok_or_else(|| Error::InvalidInput(format!("unknown escrow `{id}`")))
}

fn moved(id: &str, to: EscrowStatus, from: &[EscrowStatus]) -> Result<Escrow, Error> {
    let mut e = known(id)?;
    if e.status == to {
        return Ok(e);
    }
    if !from.contains(&e.status) {
        return Err(Error::InvalidInput(format!(
            "escrow `{id}` is {}; it cannot become {}",
            status_name(e.status),
            status_name(to)
        )));
    }
    e.status = to;
    save(&e)?;
    Ok(e)
}

impl Guest for LegacyPay {
    fn currencies() -> Vec<CurrencyInfo> {
        vec![CurrencyInfo {
            code: "USD".into(),
            decimals: 6,
        }]
    }

    fn create_escrow(request: EscrowRequest) -> Result<Escrow, Error> {
        if request.amount.currency != "USD" || request.amount.amount == 0 {
            return Err(Error::Unsupported(
                "legacy-pay holds positive USD amounts only".into(),
            ));
        }
        if request.job_id.is_empty() || request.job_id.contains([' ', '/']) {
            return Err(Error::InvalidInput("malformed job id".into()));
        }
        let id = format!("legacy-{}", request.job_id);
        if let Some(existing) = load(&id)? {
            return Ok(existing);
        }
        let e = Escrow {
            id,
            status: EscrowStatus::Funded,
            amount: request.amount,
            deposit_address: None,
            expires_at: now_secs().saturating_add(request.expires_in_secs),
        };
        save(&e)?;
        Ok(e)
    }

    fn status(id: String) -> Result<Escrow, Error> {
        if let Some(e) = load(&id)? {
            return Ok(e);
        }
        let Some(rest) = id.strip_prefix("ext:") else {
            return Err(Error::InvalidInput(format!("unknown escrow `{id}`")));
        };
        let (pays, amount) = rest
            .rsplit_once(':')
            .ok_or_else(|| Error::InvalidInput(format!("malformed escrow id `{id}`")))?;
        let account = config::get("account").unwrap_or_default();
        if pays != account {
            return Err(Error::InvalidInput(format!(
                "escrow `{id}` pays `{pays}`, not this node's account `{account}`"
            )));
        }
        Ok(Escrow {
            id: id.clone(),
            status: EscrowStatus::Funded,
            amount: Money {
                amount: amount
                    .parse()
                    .map_err(|_| Error::InvalidInput(format!("malformed escrow id `{id}`")))?,
                currency: "USD".into(),
            },
            deposit_address: Some(format!("held-for:{account}")),
            expires_at: 0,
        })
    }

    fn release(id: String) -> Result<Escrow, Error> {
        moved(
            &id,
            EscrowStatus::Settled,
            &[EscrowStatus::Funded, EscrowStatus::Disputed],
        )
    }

    fn refund(id: String) -> Result<Escrow, Error> {
        moved(
            &id,
            EscrowStatus::Refunded,
            &[EscrowStatus::Funded, EscrowStatus::Disputed],
        )
    }

    fn dispute(id: String, _reason: String) -> Result<Escrow, Error> {
        moved(&id, EscrowStatus::Disputed, &[EscrowStatus::Funded])
    }

    fn handle_webhook(_headers: Vec<(String, String)>, _body: Vec<u8>) -> Result<Escrow, Error> {
        Err(Error::Unsupported("legacy-pay takes no webhooks".into()))
    }
}

export!(LegacyPay);
