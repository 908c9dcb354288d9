//! CoinPay Portal payment adapter: non-custodial crypto escrow through
//! CoinPay's token-based escrow API (<https://coinpayportal.com/docs>).
//!
//! Config keys: `base_url` (default `https://coinpayportal.com/api`; its host
//! must be in the plugin's `allowed_hosts`).
//! Secrets (names the node config maps to environment variables):
//! * `api_key` — sent as `Authorization: Bearer <key>` when configured;
//! * `webhook_secret` — the endpoint's signing secret, required by
//!   `handle-webhook`;
//! * `token_key` — encrypts the escrow's release/beneficiary tokens at rest
//!   (see [`record`]); without it they are stored in clear in the node's database.
//!
//! Calls: `POST /escrow` (amount as an exact decimal JSON number of whole
//! units of `chain`), `GET /escrow/{id}`, `POST /escrow/{id}/release|refund`
//! with `{release_token}`, `POST /escrow/{id}/dispute` with `{token, reason}`.
//! Webhooks are verified as `X-CoinPay-Signature: t=<unix>,v1=<hex>` =
//! HMAC-SHA256 over `<t>.<raw body>`, within five minutes.
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

/// `POST /escrow/{id}/{action}` with `body`; on a 409 (state moved under
/// us) refreshes and lets the caller re-check. Saves the new state.
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
        // The amount is a JSON number in whole units, written from its exact
        // decimal string (serde_json would go through f64).
        let rest = body.to_string();
        let body = format!(
            "{{\"amount\":{},{}",
            money::to_decimal(u128::from(req.amount.amount), decimals),
            &rest[1..]
        );

        let json = api::call(http::Method::Post, "/escrow", Some(body), &redact_for_new())?;
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
    let amount = api::raw_amount(&raw)
        .and_then(|a| money::from_decimal(&a, decimals))
        .ok_or_else(|| bad("the answer has no readable amount"))?;
    let s = api::str_field(&json, "status").ok_or_else(|| bad("the answer has no status"))?;
    let status = parse_status(s).ok_or_else(|| bad(&format!("unknown status `{s}`")))?;
    let beneficiary = api::str_field(&json, "beneficiary_address")
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| bad("the answer names no beneficiary_address"))?;
    Ok(Escrow {
        id: id.to_string(),
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
            EscrowStatus::Funded => {}
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
            EscrowStatus::Pending | EscrowStatus::Funded => {}
            other => return Err(wrong_state(&id, "refunded", other)),
        }
        let token = record::open(&id, &rec.release_token)?;
        act(&mut rec, "refund", json!({ "release_token": token }))?;
        log::info(&format!("refunded CoinPay escrow {id} ({})", rec.status));
        Ok(rec.to_wit())
    }

    fn dispute(&mut self, id: String, reason: String) -> Result<Escrow, Error> {
        check_id(&id)?;
        if reason.trim().is_empty() {
            return Err(Error::invalid("a dispute needs a reason"));
        }
        let mut rec = record::load(&id)?;
        refresh(&mut rec)?;
        match rec.status() {
            EscrowStatus::Disputed => return Ok(rec.to_wit()),
            EscrowStatus::Pending | EscrowStatus::Funded | EscrowStatus::Released => {}
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
