-- Approval service schema. Portable SQL (TEXT / INTEGER / BIGINT, no engine-specific
-- features) so the same file runs on SQLite and PostgreSQL. Times are unix milliseconds.

CREATE TABLE IF NOT EXISTS approvals (
    id           TEXT    NOT NULL PRIMARY KEY,
    status       TEXT    NOT NULL,  -- pending | approved | denied | expired | consumed
    tool         TEXT    NOT NULL,
    arguments    TEXT    NOT NULL,  -- JSON text
    digest       TEXT    NOT NULL,  -- 64 lower-case hex
    caller       TEXT    NOT NULL,
    conversation TEXT    NOT NULL,
    excerpt      TEXT    NOT NULL,  -- masked excerpt (shown to every approver)
    excerpt_raw  TEXT,              -- unmasked excerpt (shown only to PII roles)
    rule         TEXT    NOT NULL,
    mode         TEXT    NOT NULL,  -- hold | defer
    request_id   TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    decided_at   BIGINT,
    decided_by   TEXT,
    reason       TEXT,
    consumed_at  BIGINT
);

CREATE INDEX IF NOT EXISTS approvals_status_expires ON approvals (status, expires_at);
CREATE INDEX IF NOT EXISTS approvals_created ON approvals (created_at);

-- The audit trail: one row per state change, written in the same transaction as the change.
CREATE TABLE IF NOT EXISTS events (
    seq         BIGINT  NOT NULL PRIMARY KEY,  -- 1, 2, ... assigned inside the transaction
    approval_id TEXT    NOT NULL,
    kind        TEXT    NOT NULL,  -- created | decided | expired | consumed
    actor       TEXT    NOT NULL,  -- caller (created), approver name (decided), "system", "client"
    at          BIGINT  NOT NULL,
    decision    TEXT,              -- approve | deny (decided only)
    reason      TEXT
);

CREATE INDEX IF NOT EXISTS events_approval ON events (approval_id, seq);
