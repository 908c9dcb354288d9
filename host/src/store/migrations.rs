//! Versioned schema migrations. Each entry runs once, in its own
//! transaction, and is recorded in `schema_migrations`. Never edit an entry
//! that has shipped: append a new one.

/// One schema step.
pub struct Migration {
    /// Monotonic version, starting at 1.
    pub version: i64,
    /// Short name, recorded with the version.
    pub name: &'static str,
    /// SQL run as one batch.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs, job_events, peers, quotes",
        sql: r#"
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('client', 'provider')),
    model         TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('created', 'quoted', 'escrowed', 'assigned',
                  'running', 'delivered', 'verified', 'settled', 'failed', 'refunded',
                  'disputed', 'slashed')),
    client_peer   TEXT,
    provider_peer TEXT,
    quote_id      TEXT REFERENCES quotes(id),
    request_hash  TEXT NOT NULL,
    request       TEXT,
    result        TEXT,
    error         TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX jobs_state ON jobs(state);
CREATE INDEX jobs_request_hash ON jobs(request_hash);

CREATE TABLE job_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL REFERENCES jobs(id),
    from_state TEXT,
    to_state   TEXT NOT NULL,
    detail     TEXT,
    at_ms      INTEGER NOT NULL
);
CREATE INDEX job_events_job ON job_events(job_id, seq);
CREATE TRIGGER job_events_append_only_update BEFORE UPDATE ON job_events
BEGIN SELECT RAISE(ABORT, 'job_events is append-only'); END;
CREATE TRIGGER job_events_append_only_delete BEFORE DELETE ON job_events
BEGIN SELECT RAISE(ABORT, 'job_events is append-only'); END;

CREATE TABLE peers (
    peer_id      TEXT PRIMARY KEY NOT NULL,
    addrs        TEXT NOT NULL DEFAULT '[]',
    models       TEXT NOT NULL DEFAULT '[]',
    last_seen_ms INTEGER NOT NULL,
    latency_ms   INTEGER,
    reputation   REAL NOT NULL DEFAULT 0.5,
    successes    INTEGER NOT NULL DEFAULT 0,
    failures     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE quotes (
    id            TEXT PRIMARY KEY NOT NULL,
    job_id        TEXT NOT NULL REFERENCES jobs(id),
    provider_peer TEXT NOT NULL,
    model         TEXT NOT NULL,
    price         INTEGER NOT NULL CHECK (price >= 0),
    currency      TEXT NOT NULL,
    breakdown     TEXT NOT NULL DEFAULT '[]',
    expires_at_ms INTEGER NOT NULL,
    accepted      INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX quotes_job ON quotes(job_id);
"#,
    },
    Migration {
        version: 2,
        name: "plugin_kv, escrows, quotes.pay_to",
        sql: r#"
CREATE TABLE plugin_kv (
    namespace     TEXT NOT NULL,
    key           TEXT NOT NULL,
    value         BLOB NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;

CREATE TABLE escrows (
    id            TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('pay', 'earn', 'stake')),
    job_id        TEXT,
    adapter       TEXT NOT NULL,
    escrow_id     TEXT,
    amount        TEXT NOT NULL,
    currency      TEXT NOT NULL,
    depositor     TEXT NOT NULL,
    beneficiary   TEXT NOT NULL,
    client_peer   TEXT,
    provider_peer TEXT,
    status        TEXT NOT NULL CHECK (status IN ('creating', 'pending', 'funded', 'released',
                  'settled', 'refunded', 'disputed', 'expired', 'abandoned')),
    confirmed_by  TEXT,
    expires_at_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX escrows_job ON escrows(job_id);
CREATE INDEX escrows_status ON escrows(status);

ALTER TABLE quotes ADD COLUMN pay_to TEXT NOT NULL DEFAULT '[]';
"#,
    },
    Migration {
        version: 3,
        name: "attestations, advertised_stakes",
        sql: r#"
CREATE TABLE attestations (
    attester    TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('verified', 'cheated')),
    evidence    TEXT,
    at_ms       INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    signed      BLOB NOT NULL,
    PRIMARY KEY (attester, job_id)
) WITHOUT ROWID;
CREATE INDEX attestations_subject ON attestations(subject, at_ms);
CREATE INDEX attestations_at ON attestations(at_ms);

CREATE TABLE advertised_stakes (
    peer_id  TEXT PRIMARY KEY NOT NULL,
    amount   TEXT NOT NULL,
    currency TEXT NOT NULL,
    seen_ms  INTEGER NOT NULL,
    certified INTEGER NOT NULL DEFAULT 0
);
"#,
    },
    Migration {
        version: 4,
        name: "custody, slashes",
        sql: r#"
CREATE TABLE custody (
    provider_peer TEXT PRIMARY KEY NOT NULL,
    stake_job     TEXT NOT NULL,
    adapter       TEXT NOT NULL,
    escrow_id     TEXT,
    amount        TEXT NOT NULL,
    currency      TEXT NOT NULL,
    depositor     TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('creating', 'pending', 'funded',
                  'withdrawing', 'refunded', 'slashed', 'abandoned')),
    cert_until_ms INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE slashes (
    stake_escrow   TEXT PRIMARY KEY NOT NULL,
    provider_peer  TEXT NOT NULL,
    client_peer    TEXT NOT NULL,
    job_id         TEXT NOT NULL,
    adapter        TEXT NOT NULL,
    currency       TEXT NOT NULL,
    to_client      TEXT NOT NULL,
    to_referee     TEXT NOT NULL,
    payout_account TEXT,
    payout_escrow  TEXT,
    evidence       BLOB NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('ruled', 'forfeited', 'paying', 'paid')),
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL
);
CREATE INDEX slashes_status ON slashes(status);
"#,
    },
];

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}
