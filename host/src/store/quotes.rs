//! The `quotes` table: offers made by providers for a job.

use super::rows::{json, query, query_one, FromRow};
use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension, Row};

/// One provider's offer for one job.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteRecord {
    /// Quote id (unique).
    pub id: String,
    /// The job it prices (must exist).
    pub job_id: String,
    /// Who offered it.
    pub provider_peer: String,
    /// Model id.
    pub model: String,
    /// Total price in minor units.
    pub price: u64,
    /// Currency code.
    pub currency: String,
    /// Named parts of the price.
    pub breakdown: Vec<(String, u64)>,
    /// Offer expiry, ms since epoch.
    pub expires_at_ms: i64,
    /// Whether the client accepted it.
    pub accepted: bool,
    /// When it was recorded, ms since epoch.
    pub created_at_ms: i64,
}

/// Quotes repository; see [`Store::quotes`].
pub struct QuotesRepo<'a> {
    pub(super) store: &'a Store,
}

impl FromRow for QuoteRecord {
    const COLUMNS: &'static str = "id, job_id, provider_peer, model, price, currency, breakdown, \
         expires_at_ms, accepted, created_at_ms";

    fn from_row(r: &Row<'_>) -> Result<Self, StoreError> {
        let price: i64 = r.get(4)?;
        Ok(QuoteRecord {
            id: r.get(0)?,
            job_id: r.get(1)?,
            provider_peer: r.get(2)?,
            model: r.get(3)?,
            price: u64::try_from(price)
                .map_err(|_| StoreError::Corrupt(format!("negative price {price}")))?,
            currency: r.get(5)?,
            breakdown: json(r, 6)?,
            expires_at_ms: r.get(7)?,
            accepted: r.get(8)?,
            created_at_ms: r.get(9)?,
        })
    }
}

impl QuotesRepo<'_> {
    /// Records a quote. The job must exist (foreign key).
    pub fn insert(&self, q: &QuoteRecord) -> Result<(), StoreError> {
        let price = i64::try_from(q.price)
            .map_err(|_| StoreError::Corrupt(format!("price {} too large", q.price)))?;
        let breakdown = serde_json::to_string(&q.breakdown)?;
        self.store.write(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO quotes ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    QuoteRecord::COLUMNS
                ),
                params![
                    q.id,
                    q.job_id,
                    q.provider_peer,
                    q.model,
                    price,
                    q.currency,
                    breakdown,
                    q.expires_at_ms,
                    q.accepted,
                    q.created_at_ms
                ],
            )?;
            Ok(())
        })
    }

    /// One quote.
    pub fn get(&self, id: &str) -> Result<Option<QuoteRecord>, StoreError> {
        query_one(&self.store.conn(), "quotes WHERE id = ?1", [id])
    }

    /// Every quote for a job, cheapest first.
    pub fn for_job(&self, job_id: &str) -> Result<Vec<QuoteRecord>, StoreError> {
        query(
            &self.store.conn(),
            "quotes WHERE job_id = ?1 ORDER BY price, created_at_ms, id",
            [job_id],
        )
    }

    /// Marks a quote of `job_id` accepted.
    pub fn accept(&self, job_id: &str, quote_id: &str) -> Result<(), StoreError> {
        self.store.write(|tx| {
            let n = tx.execute(
                "UPDATE quotes SET accepted = 1 WHERE id = ?1 AND job_id = ?2",
                params![quote_id, job_id],
            )?;
            if n == 0 {
                return Err(StoreError::QuoteNotFound(quote_id.into()));
            }
            Ok(())
        })
    }

    /// Records how the quote's provider can be paid (JSON list of `PayTo`).
    pub fn set_pay_to(&self, quote_id: &str, pay_to_json: &str) -> Result<(), StoreError> {
        self.store.conn().execute(
            "UPDATE quotes SET pay_to = ?2 WHERE id = ?1",
            params![quote_id, pay_to_json],
        )?;
        Ok(())
    }

    /// How the quote's provider can be paid (JSON list; `[]` when unpaid or unknown).
    pub fn pay_to(&self, quote_id: &str) -> Result<String, StoreError> {
        Ok(self
            .store
            .conn()
            .query_row("SELECT pay_to FROM quotes WHERE id = ?1", [quote_id], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or_else(|| "[]".into()))
    }
}
