-- PostgreSQL's 0001, in parity with ../0001_serving.sql (tests/postgres.rs checks
-- the tables, columns, type classes, NOT NULL, primary keys and indexes): SQLite's
-- INTEGER is BIGINT here, REAL is DOUBLE PRECISION, BLOB is BYTEA, TEXT is TEXT.
-- Times are Unix milliseconds (UTC).

CREATE TABLE predictions (
    id            TEXT    PRIMARY KEY,      -- UUIDv7, given to the client
    time          BIGINT  NOT NULL,
    model_version TEXT    NOT NULL,
    features      TEXT    NOT NULL,         -- JSON object as received
    output        TEXT    NOT NULL,         -- JSON: prediction (+ probabilities)
    latency_us    BIGINT  NOT NULL,         -- encode + forward pass
    anomaly_score DOUBLE PRECISION          -- filled once anomaly scoring exists
);

CREATE INDEX predictions_time ON predictions (time);

CREATE TABLE feedback (
    prediction_id TEXT    PRIMARY KEY REFERENCES predictions (id) ON DELETE CASCADE,
    time          BIGINT  NOT NULL,
    label         TEXT    NOT NULL,         -- JSON value: class name or number
    revisions     BIGINT  NOT NULL DEFAULT 0 -- times the label was replaced
);

CREATE TABLE models (
    version  TEXT    PRIMARY KEY,
    created  BIGINT  NOT NULL,
    path     TEXT    NOT NULL,
    metrics  TEXT    NOT NULL,              -- JSON object
    sparsity DOUBLE PRECISION NOT NULL DEFAULT 0,
    bits     BIGINT  NOT NULL DEFAULT 32,
    status   TEXT    NOT NULL CONSTRAINT models_status CHECK (status IN ('active', 'inactive')),
    parent   TEXT,
    source   TEXT    NOT NULL               -- how it came: bootstrap, import, ...
);

-- At most one active version.
CREATE UNIQUE INDEX models_one_active ON models (status) WHERE status = 'active';

-- A row the readiness probe rewrites to prove the database is writable.
CREATE TABLE heartbeat (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    time BIGINT NOT NULL
);
INSERT INTO heartbeat (id, time) VALUES (1, 0);
