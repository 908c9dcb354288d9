//! What the adapter keeps per escrow in its `kv` namespace, and the
//! at-rest protection of the escrow tokens.
//!
//! Keys: `escrow/<id>` → [`Record`] as JSON; `job/<job-id>` → escrow id.
//!
//! The release and beneficiary tokens are bearer credentials: whoever holds
//! them can release or dispute the escrow. When the secret `token_key` is
//! configured they are sealed with ChaCha20-Poly1305 under
//! `HMAC-SHA256(token_key, "infernet-coinpay-token")`, a fresh random 96-bit
//! nonce each, the escrow id as associated data (`enc1:<hex nonce‖ciphertext>`).
//! A node always grants `token_key`: the configured secret, or one it
//! derives from its node-local secret. Only an adapter run without one (a
//! bare test) stores them as-is (`plain:<token>`).

use chacha20poly1305::aead::{Aead, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, KeyInit, Mac};
use infernet_plugin_api::escrow::EscrowState;
use infernet_plugin_api::{config, kv, Error, Escrow, EscrowStatus, Money};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// One escrow as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub job_id: String,
    pub amount: u64,
    pub currency: String,
    pub status: String,
    /// Who is paid on release (CoinPay's `beneficiary_address`); empty for
    /// records kept before the adapter recorded it, until the next refresh.
    #[serde(default)]
    pub beneficiary: String,
    pub expires_at: u64,
    pub deposit_address: Option<String>,
    /// Sealed (or `plain:`) release token.
    pub release_token: String,
    /// Sealed (or `plain:`) beneficiary token.
    pub beneficiary_token: Option<String>,
}

impl Record {
    pub fn status(&self) -> EscrowStatus {
        parse_status(&self.status).unwrap_or(EscrowStatus::Pending)
    }

    pub fn to_wit(&self) -> Escrow {
        Escrow {
            id: self.id.clone(),
            status: self.status(),
            amount: Money {
                amount: self.amount,
                currency: self.currency.clone(),
            },
            deposit_address: self.deposit_address.clone(),
            expires_at: self.expires_at,
            beneficiary: self.beneficiary.clone(),
        }
    }
}

/// The WIT status of a CoinPay status string: the WIT names, plus CoinPay's
/// `created` for an escrow waiting for its deposit.
pub fn parse_status(s: &str) -> Option<EscrowStatus> {
    let s = s.to_ascii_lowercase();
    if s == "created" {
        return Some(EscrowStatus::Pending);
    }
    EscrowState::parse(&s).map(Into::into)
}

fn escrow_key(id: &str) -> String {
    format!("escrow/{id}")
}

fn job_key(job_id: &str) -> String {
    format!("job/{job_id}")
}

/// The stored escrow `id`, or `invalid-input` when this adapter never made it.
pub fn load(id: &str) -> Result<Record, Error> {
    try_load(id)?.ok_or_else(|| {
        Error::invalid(format!(
            "unknown escrow `{id}` (not created through this adapter)"
        ))
    })
}

/// The stored escrow `id`, if this adapter made it.
pub fn try_load(id: &str) -> Result<Option<Record>, Error> {
    match kv::get(&escrow_key(id))? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::internal(format!("stored escrow `{id}` is corrupt: {e}"))),
        None => Ok(None),
    }
}

/// The escrow id already created for `job_id`, if any.
pub fn for_job(job_id: &str) -> Result<Option<String>, Error> {
    Ok(kv::get(&job_key(job_id))?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Stores `record` (and its job index).
pub fn save(record: &Record) -> Result<(), Error> {
    let bytes = serde_json::to_vec(record)
        .map_err(|e| Error::internal(format!("serializing escrow: {e}")))?;
    kv::set(&escrow_key(&record.id), &bytes)?;
    kv::set(&job_key(&record.job_id), record.id.as_bytes())?;
    Ok(())
}

fn token_cipher() -> Option<ChaCha20Poly1305> {
    let secret = config::secret("token_key").filter(|s| !s.is_empty())?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"infernet-coinpay-token");
    let key = mac.finalize().into_bytes();
    Some(ChaCha20Poly1305::new(Key::from_slice(&key)))
}

/// Seals `token` of escrow `id` for storage.
pub fn seal(id: &str, token: &str) -> Result<String, Error> {
    let Some(cipher) = token_cipher() else {
        return Ok(format!("plain:{token}"));
    };
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce)
        .map_err(|e| Error::internal(format!("no randomness for the token nonce: {e}")))?;
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: token.as_bytes(),
                aad: id.as_bytes(),
            },
        )
        .map_err(|_| Error::internal("sealing an escrow token failed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(format!("enc1:{}", hex::encode(out)))
}

/// Opens a token stored by [`seal`]. Errors never contain the token.
pub fn open(id: &str, stored: &str) -> Result<String, Error> {
    if let Some(plain) = stored.strip_prefix("plain:") {
        return Ok(plain.to_string());
    }
    let Some(hexed) = stored.strip_prefix("enc1:") else {
        return Err(Error::internal(format!(
            "escrow `{id}`: stored token has an unknown format"
        )));
    };
    let cipher = token_cipher().ok_or_else(|| {
        Error::invalid(format!(
            "escrow `{id}`: its tokens are encrypted but the `token_key` secret is not configured"
        ))
    })?;
    let bytes = hex::decode(hexed)
        .map_err(|_| Error::internal(format!("escrow `{id}`: stored token is corrupt")))?;
    if bytes.len() < 12 + 16 {
        return Err(Error::internal(format!(
            "escrow `{id}`: stored token is corrupt"
        )));
    }
    let (nonce, sealed) = bytes.split_at(12);
    let plain = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: id.as_bytes(),
            },
        )
        .map_err(|_| {
            Error::invalid(format!(
                "escrow `{id}`: stored token does not decrypt (was `token_key` changed?)"
            ))
        })?;
    String::from_utf8(plain)
        .map_err(|_| Error::internal(format!("escrow `{id}`: stored token is corrupt")))
}
