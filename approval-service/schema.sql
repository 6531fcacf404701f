-- Approval service schema: approvals, their audit trail, and the review queue. Portable SQL
-- (TEXT / INTEGER / BIGINT, no engine-specific features) so the same file runs on SQLite and
-- PostgreSQL. Times are unix milliseconds.

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

-- Reviews: answers a guard filter could not give (the upstream failed, or a guard refused
-- the answer) and escalated for a person to follow up (docs/fallback.md). The client got a
-- "a person will follow up" answer naming the id.
CREATE TABLE IF NOT EXISTS reviews (
    id          TEXT    NOT NULL PRIMARY KEY,
    status      TEXT    NOT NULL,  -- open | resolved
    cause       TEXT    NOT NULL,  -- upstream_failure | flagged_answer
    reason      TEXT    NOT NULL,  -- the filter's reason code (schema_violation, upstream_failure, ...)
    filter      TEXT    NOT NULL,
    policy      TEXT    NOT NULL,
    route       TEXT    NOT NULL,
    api         TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    http_status INTEGER,           -- the status the answer would have had
    caller      TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    excerpt     TEXT    NOT NULL,  -- masked excerpt (shown to every approver)
    excerpt_raw TEXT,              -- unmasked excerpt (shown only to PII roles)
    created_at  BIGINT  NOT NULL,
    resolved_at BIGINT,
    resolved_by TEXT,
    note        TEXT
);

CREATE INDEX IF NOT EXISTS reviews_status_created ON reviews (status, created_at);
