//! CoinPay Portal payment adapter: non-custodial crypto escrow through
//! CoinPay's token-based escrow API (<https://coinpayportal.com/docs>).
//!
//! Config keys:
//! * `base_url` (default `https://coinpayportal.com/api`); its scheme, host
//!   and port must be granted by the plugin's `allowed_hosts` (a bare host
//!   grants `https` on port 443 only);
//! * `business_id` — the CoinPay business (a UUID) escrows are created
//!   under. CoinPay sends escrow webhooks only for escrows created with a
//!   `business_id`, to that business's webhook endpoint, so it is required
//!   when the `webhook_secret` secret is configured (a create without it is
//!   refused as `unsupported`); without webhooks it is optional.
//!
//! Secrets (names the node config maps to environment variables):
//! * `api_key` — sent as `Authorization: Bearer <key>` when configured;
//! * `webhook_secret` — the business's webhook signing secret, required by
//!   `handle-webhook`;
//! * `token_key` — encrypts the escrow's release/beneficiary tokens at rest
//!   (optional: a node derives one from its node-local secret otherwise)
//!   (see [`record`]); without it they are stored in clear in the node's database.
//!
//! Calls: `POST /escrow` (amount as an exact decimal JSON number of whole
//! units of `chain`), `GET /escrow/{id}`, `POST /escrow/{id}/release|refund`
//! with `{release_token}`, `POST /escrow/{id}/dispute` with `{token, reason}`.
//! Webhooks are verified as `X-CoinPay-Signature: t=<unix>,v1=<hex>` =
//! HMAC-SHA256 over `<t>.<raw body>`, within five minutes.
//!
//! What the service allows, and so what this adapter asks for: release of
//! a `funded` or `disputed` escrow; refund of a `funded` one only; a
//! dispute of a `funded` one, with a reason of at least 10 characters; an
//! escrow never funded is expired by the service at `expires_at`, so
//! `refund` of a `pending` escrow sends nothing and answers it as it is
//! (`pending`, not final: a deposit arriving before expiry makes it
//! `funded`, and the next `refund` returns it). A funded escrow does not
//! expire: it is held until released or refunded. State errors come back
//! as HTTP 400. Amounts come back as JSON numbers printed from a double
//! (`3.3e-7`): read exactly ([`money::parse_amount`]), and an amount a
//! double cannot carry (more than 15 significant digits) is refused before
//! the create; expiry is at most 720 hours.
//!
//! Every escrow is kept in the plugin's `kv` namespace (see [`record`]);
//! `create-escrow` is idempotent per job id, `release` and `refund` are
//! idempotent, and tokens never appear in logs or errors.

mod api;
mod clock;
mod money;
mod record;
mod webhook;

use infernet_plugin_api::{
    config, export_payment, http, log, CurrencyInfo, Error, Escrow, EscrowRequest, EscrowStatus,
    Money, Payment,
};
use record::{parse_status, Record};
use serde_json::{json, Map, Value};

/// The adapter; all state lives in `kv`, none in the instance.
struct CoinPay;

/// Statuses that no call moves anymore.
fn is_final(s: EscrowStatus) -> bool {
    matches!(
        s,
        EscrowStatus::Settled | EscrowStatus::Refunded | EscrowStatus::Expired
    )
}

/// Position on the happy path, to refuse webhooks that would move an escrow back.
fn rank(s: EscrowStatus) -> u8 {
    match s {
        EscrowStatus::Pending => 0,
        EscrowStatus::Funded => 1,
        EscrowStatus::Disputed => 2,
        EscrowStatus::Released => 3,
        EscrowStatus::Settled | EscrowStatus::Refunded | EscrowStatus::Expired => 4,
    }
}

/// Strings to scrub from errors for `record`: its tokens, opened.
fn redact_for(record: &Record) -> api::Redact {
    let mut r = api::Redact::default();
    if let Ok(t) = record::open(&record.id, &record.release_token) {
        r.0.push(t);
    }
    if let Some(b) = &record.beneficiary_token {
        if let Ok(t) = record::open(&record.id, b) {
            r.0.push(t);
        }
    }
    if let Some(k) = config::secret("api_key") {
        r.0.push(k);
    }
    r
}

/// Escrow ids go into URL paths: keep them to a safe alphabet, and never
/// a path segment of dots (`..` would leave `/escrow/`).
fn check_id(id: &str) -> Result<(), Error> {
    if id.is_empty()
        || id.len() > 128
        || id.bytes().all(|c| c == b'.')
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(format!("malformed escrow id `{id}`")));
    }
    Ok(())
}

/// Longest expiry CoinPay accepts, hours.
const MAX_EXPIRY_HOURS: u64 = 720;

/// Shortest dispute reason CoinPay accepts, in UTF-16 code units of the
/// trimmed reason (JavaScript's `reason.trim().length`).
const MIN_DISPUTE_REASON: usize = 10;

/// Whether `s` is a UUID (`8-4-4-4-12` hex digits), as CoinPay's
/// `business_id` must be.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Config `business_id`, checked; `None` when not configured. Required
/// when webhooks are configured: CoinPay sends escrow webhooks only for
/// escrows created with one.
fn business_id() -> Result<Option<String>, Error> {
    let id = config::get("business_id")
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty());
    match id {
        Some(id) if is_uuid(&id) => Ok(Some(id)),
        Some(id) => Err(Error::invalid(format!(
            "config `business_id` = `{id}` is not a UUID (CoinPay business ids are UUIDs)"
        ))),
        None if config::secret("webhook_secret").is_some_and(|s| !s.is_empty()) => {
            Err(Error::unsupported(
                "webhooks are configured (secret `webhook_secret`) but config `business_id` \
                 is not: CoinPay sends escrow webhooks only for escrows created with the \
                 business_id whose endpoint and secret are configured; set `business_id` \
                 in the payment plugin's config",
            ))
        }
        None => Ok(None),
    }
}

/// The exact amount of an escrow answer in `raw`, in minor units of a
/// currency with `decimals`; `None` when the answer carries no amount.
fn answer_amount(raw: &[u8], decimals: u8, what: &str) -> Result<Option<u64>, Error> {
    let Some(text) = api::raw_amount(raw) else {
        return Ok(None);
    };
    money::parse_amount(&text, decimals)
        .map(Some)
        .map_err(|e| Error::internal(format!("{what}: amount `{text}` {e}")))
}

/// Applies the server's view of an escrow (`json`) to `record`.
fn apply(record: &mut Record, json: &Value) -> Result<(), Error> {
    if let Some(s) = api::str_field(json, "status") {
        let status = parse_status(s).ok_or_else(|| {
            Error::internal(format!(
                "CoinPay reported unknown status `{s}` for escrow `{}`",
                record.id
            ))
        })?;
        record.status = status.name().to_string();
    }
    if let Some(b) = api::str_field(json, "beneficiary_address") {
        record.beneficiary = b.to_string();
    }
    if let Some(t) = api::expires_at(json) {
        record.expires_at = t;
    }
    if let Some(a) = api::str_field(json, "escrow_address") {
        record.deposit_address = Some(a.to_string());
    }
    Ok(())
}

/// Fetches the server's view unless the escrow is final; saves it.
fn refresh(record: &mut Record) -> Result<(), Error> {
    if is_final(record.status()) {
        return Ok(());
    }
    let json = api::call(
        http::Method::Get,
        &format!("/escrow/{}", record.id),
        None,
        &redact_for(record),
    )?;
    apply(record, &json)?;
    record::save(record)
}

/// `POST /escrow/{id}/{action}` with `body`; on an error (a 400 when the
/// state moved under us) refreshes so the local copy is current, and
/// returns the error. Saves the new state.
fn act(record: &mut Record, action: &str, body: Value) -> Result<(), Error> {
    let path = format!("/escrow/{}/{action}", record.id);
    match api::call(
        http::Method::Post,
        &path,
        Some(body.to_string()),
        &redact_for(record),
    ) {
        Ok(json) => {
            apply(record, &json)?;
            record::save(record)
        }
        Err(e) => {
            // The state may have changed concurrently (e.g. released by the
            // other side): keep the local copy current either way.
            let _ = refresh(record);
            Err(e)
        }
    }
}

impl CoinPay {
    fn create(&mut self, req: EscrowRequest) -> Result<Escrow, Error> {
        let currency = req.amount.currency.trim().to_ascii_uppercase();
        let decimals = money::decimals(&currency)?;
        if req.amount.amount == 0 {
            return Err(Error::invalid("escrow amount must be greater than zero"));
        }
        money::check_representable(req.amount.amount, &currency, decimals)?;
        if req.job_id.trim().is_empty() {
            return Err(Error::invalid("escrow request has an empty job id"));
        }
        if req.depositor.trim().is_empty() || req.beneficiary.trim().is_empty() {
            return Err(Error::invalid(
                "escrow request needs depositor and beneficiary addresses",
            ));
        }
        if let Some(id) = record::for_job(&req.job_id)? {
            let mut existing = record::load(&id)?;
            if existing.amount != req.amount.amount || existing.currency != currency {
                return Err(Error::invalid(format!(
                    "job `{}` already has escrow `{id}` for a different amount",
                    req.job_id
                )));
            }
            refresh(&mut existing)?;
            return Ok(existing.to_wit());
        }

        let mut metadata = Map::new();
        for (k, v) in &req.metadata {
            metadata.insert(k.clone(), Value::String(v.clone()));
        }
        metadata.insert("job_id".into(), Value::String(req.job_id.clone()));
        let hours = req.expires_in_secs.div_ceil(3600).max(1);
        if hours > MAX_EXPIRY_HOURS {
            return Err(Error::invalid(format!(
                "an escrow expiring in {hours} hours: CoinPay allows at most {MAX_EXPIRY_HOURS}"
            )));
        }
        let business = business_id()?;
        let mut body = json!({
            "chain": currency,
            "depositor_address": req.depositor,
            "beneficiary_address": req.beneficiary,
            "metadata": metadata,
            "expires_in_hours": hours,
        });
        if let Some(arbiter) = &req.arbiter {
            body["arbiter_address"] = Value::String(arbiter.clone());
        }
        if let Some(b) = business {
            body["business_id"] = Value::String(b);
        }
        // The amount is a JSON number in whole units, written from its exact
        // decimal string (serde_json would go through f64).
        let rest = body.to_string();
        let body = format!(
            "{{\"amount\":{},{}",
            money::to_decimal(u128::from(req.amount.amount), decimals),
            &rest[1..]
        );

        let (json, raw) =
            api::call_raw(http::Method::Post, "/escrow", Some(body), &redact_for_new())?;
        let id = api::str_field(&json, "id")
            .ok_or_else(|| Error::internal("CoinPay's create-escrow answer has no `id`"))?
            .to_string();
        check_id(&id)?;
        let release_token = api::str_field(&json, "release_token").ok_or_else(|| {
            Error::internal(format!(
                "CoinPay's create-escrow answer for `{id}` has no release token"
            ))
        })?;
        let beneficiary_token = api::str_field(&json, "beneficiary_token");
        let mut rec = Record {
            id: id.clone(),
            job_id: req.job_id.clone(),
            amount: req.amount.amount,
            currency,
            status: "pending".into(),
            beneficiary: req.beneficiary.clone(),
            expires_at: clock::now() + hours * 3600,
            deposit_address: None,
            release_token: record::seal(&id, release_token)?,
            beneficiary_token: beneficiary_token
                .map(|t| record::seal(&id, t))
                .transpose()?,
        };
        // Kept before anything else can fail: the tokens exist only here.
        record::save(&rec)?;
        apply(&mut rec, &json)?;
        record::save(&rec)?;
        // The service holds what it answers: anything but the amount asked
        // for is an escrow this adapter must not hand out to be funded.
        let what = format!("CoinPay's create-escrow answer for `{id}`");
        match answer_amount(&raw, decimals, &what)? {
            Some(held) if held == rec.amount => {}
            Some(held) => {
                return Err(Error::internal(format!(
                    "{what} holds {} {currency}, not the {} {currency} asked for",
                    money::to_decimal(u128::from(held), decimals),
                    money::to_decimal(u128::from(rec.amount), decimals),
                    currency = rec.currency
                )))
            }
            None => return Err(Error::internal(format!("{what} has no amount"))),
        }
        log::info(&format!(
            "created CoinPay escrow {id} for job {} ({})",
            rec.job_id, rec.status
        ));
        Ok(rec.to_wit())
    }
}

/// The server's view of an escrow this adapter did not create (a provider
/// confirming the escrow its client made): read from CoinPay on every
/// call, nothing stored (there are no tokens to keep). The amount is read
/// exactly from the answer's text, in the escrow's own `chain`, and the
/// beneficiary is CoinPay's `beneficiary_address`: the host checks that it
/// is its own account before it runs work this escrow pays for.
fn foreign_status(id: &str) -> Result<Escrow, Error> {
    let (json, raw) = api::call_raw(
        http::Method::Get,
        &format!("/escrow/{id}"),
        None,
        &redact_for_new(),
    )?;
    let bad = |what: &str| Error::internal(format!("CoinPay's escrow `{id}`: {what}"));
    let currency = api::str_field(&json, "chain")
        .ok_or_else(|| bad("the answer names no chain"))?
        .trim()
        .to_ascii_uppercase();
    let decimals = money::decimals(&currency)?;
    let text = api::raw_amount(&raw).ok_or_else(|| bad("the answer has no amount"))?;
    let amount = money::parse_amount(&text, decimals)
        .map_err(|e| bad(&format!("its amount `{text}` {e}")))?;
    let s = api::str_field(&json, "status").ok_or_else(|| bad("the answer has no status"))?;
    let status = parse_status(s).ok_or_else(|| bad(&format!("unknown status `{s}`")))?;
    let beneficiary = api::str_field(&json, "beneficiary_address")
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| bad("the answer names no beneficiary_address"))?;
    // The service's own spelling of the id (its ids are UUIDs, matched in
    // any letter case): the host compares escrows by it.
    let canonical = api::str_field(&json, "id")
        .filter(|i| i.eq_ignore_ascii_case(id))
        .unwrap_or(id);
    Ok(Escrow {
        id: canonical.to_string(),
        status,
        amount: Money { amount, currency },
        deposit_address: api::str_field(&json, "escrow_address").map(str::to_string),
        expires_at: api::expires_at(&json).unwrap_or(0),
        beneficiary: beneficiary.to_string(),
    })
}

/// Redactions before any escrow exists: the API key only.
fn redact_for_new() -> api::Redact {
    api::Redact(config::secret("api_key").into_iter().collect())
}

fn wrong_state(id: &str, what: &str, status: EscrowStatus) -> Error {
    Error::invalid(format!(
        "escrow `{id}` is {}; it cannot be {what}",
        status.name()
    ))
}

impl Payment for CoinPay {
    fn new() -> Self {
        CoinPay
    }

    fn currencies(&mut self) -> Vec<CurrencyInfo> {
        money::currency_infos()
    }

    fn create_escrow(&mut self, request: EscrowRequest) -> Result<Escrow, Error> {
        self.create(request)
    }

    fn status(&mut self, id: String) -> Result<Escrow, Error> {
        check_id(&id)?;
        let Some(mut rec) = record::try_load(&id)? else {
            // Made elsewhere: a provider confirming its client's escrow.
            return foreign_status(&id);
        };
        refresh(&mut rec)?;
        Ok(rec.to_wit())
    }

    fn release(&mut self, id: String) -> Result<Escrow, Error> {
        check_id(&id)?;
        let mut rec = record::load(&id)?;
        refresh(&mut rec)?;
        match rec.status() {
            EscrowStatus::Released | EscrowStatus::Settled => return Ok(rec.to_wit()),
            // CoinPay releases a disputed escrow too (the depositor gives in).
            EscrowStatus::Funded | EscrowStatus::Disputed => {}
            other => return Err(wrong_state(&id, "released", other)),
        }
        let token = record::open(&id, &rec.release_token)?;
        act(&mut rec, "release", json!({ "release_token": token }))?;
        log::info(&format!("released CoinPay escrow {id} ({})", rec.status));
        Ok(rec.to_wit())
    }

    fn refund(&mut self, id: String) -> Result<Escrow, Error> {
        check_id(&id)?;
        let mut rec = record::load(&id)?;
        refresh(&mut rec)?;
        match rec.status() {
            EscrowStatus::Refunded | EscrowStatus::Expired => return Ok(rec.to_wit()),
            // Nothing was deposited, so nothing can go back: CoinPay refunds
            // funded escrows only and expires unfunded ones at `expires_at`.
            // Answered as it is, not final: the caller asks again later (a
            // late deposit makes it funded and refundable).
            EscrowStatus::Pending => {
                log::info(&format!(
                    "CoinPay escrow {id} was never funded: nothing to refund, it expires at {}",
                    rec.expires_at
                ));
                return Ok(rec.to_wit());
            }
            EscrowStatus::Funded => {}
            other => return Err(wrong_state(&id, "refunded", other)),
        }
        let token = record::open(&id, &rec.release_token)?;
        act(&mut rec, "refund", json!({ "release_token": token }))?;
        log::info(&format!("refunded CoinPay escrow {id} ({})", rec.status));
        Ok(rec.to_wit())
    }

    fn dispute(&mut self, id: String, reason: String) -> Result<Escrow, Error> {
        check_id(&id)?;
        if reason.trim().encode_utf16().count() < MIN_DISPUTE_REASON {
            return Err(Error::invalid(format!(
                "a dispute needs a reason of at least {MIN_DISPUTE_REASON} characters"
            )));
        }
        let mut rec = record::load(&id)?;
        refresh(&mut rec)?;
        match rec.status() {
            EscrowStatus::Disputed => return Ok(rec.to_wit()),
            // CoinPay opens disputes on funded escrows only.
            EscrowStatus::Funded => {}
            other => return Err(wrong_state(&id, "disputed", other)),
        }
        let token = record::open(&id, &rec.release_token)?;
        act(
            &mut rec,
            "dispute",
            json!({ "token": token, "reason": reason }),
        )?;
        log::info(&format!("opened a dispute on CoinPay escrow {id}"));
        Ok(rec.to_wit())
    }

    fn handle_webhook(
        &mut self,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Escrow, Error> {
        let secret = config::secret("webhook_secret")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::unsupported("webhooks need the `webhook_secret` secret to be configured")
            })?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let signature = header("x-coinpay-signature")
            .ok_or_else(|| Error::invalid("webhook has no X-CoinPay-Signature header"))?;
        webhook::verify(&secret, signature, &body, clock::now())?;

        let json: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::invalid(format!("webhook body is not JSON: {e}")))?;
        // The event comes from the signed body only: a header is not
        // covered by the signature and could relabel a replayed body.
        let event = json
            .get("type")
            .or_else(|| json.get("event"))
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid("webhook body names no event (`type`)"))?
            .to_string();
        // A delivery names the business it is for: never another one's.
        if let (Some(theirs), Some(ours)) = (
            json.get("business_id").and_then(Value::as_str),
            business_id().ok().flatten(),
        ) {
            if !theirs.eq_ignore_ascii_case(&ours) {
                return Err(Error::invalid(format!(
                    "webhook is for CoinPay business `{theirs}`, not this adapter's `{ours}`"
                )));
            }
        }
        let data = json.get("data").filter(|d| d.is_object()).unwrap_or(&json);
        let data = data.get("escrow").filter(|d| d.is_object()).unwrap_or(data);
        let id = ["escrow_id", "id"]
            .iter()
            .find_map(|k| data.get(*k).and_then(Value::as_str))
            .or_else(|| json.get("escrow_id").and_then(Value::as_str))
            .ok_or_else(|| Error::invalid("webhook names no escrow id"))?
            .to_string();
        check_id(&id)?;
        let status = match event.strip_prefix("escrow.") {
            Some("created") => EscrowStatus::Pending,
            Some(s) => parse_status(s)
                .ok_or_else(|| Error::unsupported(format!("webhook event `{event}`")))?,
            None => return Err(Error::unsupported(format!("webhook event `{event}`"))),
        };
        let mut rec = record::load(&id)?;
        let current = rec.status();
        // Deliveries can arrive late or twice: never move an escrow backwards
        // or out of a final state.
        if !is_final(current) && rank(status) >= rank(current) {
            rec.status = status.name().to_string();
            if let Some(t) = api::expires_at(data) {
                rec.expires_at = t;
            }
            if let Some(a) = api::str_field(data, "escrow_address") {
                rec.deposit_address = Some(a.to_string());
            }
            record::save(&rec)?;
            log::info(&format!("CoinPay webhook {event} applied to escrow {id}"));
        } else {
            log::debug(&format!(
                "CoinPay webhook {event} ignored for escrow {id} ({})",
                rec.status
            ));
        }
        Ok(rec.to_wit())
    }
}

export_payment!(CoinPay);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_ids_are_uuids() {
        assert!(is_uuid("2f1c9a8e-7b3d-4c5e-9f01-23456789abcd"));
        assert!(is_uuid("2F1C9A8E-7B3D-4C5E-9F01-23456789ABCD"));
        for bad in [
            "",
            "biz_1",
            "2f1c9a8e7b3d4c5e9f0123456789abcd",
            "2f1c9a8e-7b3d-4c5e-9f01-23456789abc",
            "2f1c9a8e-7b3d-4c5e-9f01-23456789abcde",
            "2f1c9a8e-7b3d-4c5e-9f01-23456789abcg",
            "2f1c9a8e-7b3d-4c5e-9f01-2345-6789abcd",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
    }
}
