-- The serving core: the prediction log, feedback labels and the model registry.
-- Times are Unix milliseconds (UTC).

CREATE TABLE predictions (
    id            TEXT    PRIMARY KEY,      -- UUIDv7, given to the client
    time          INTEGER NOT NULL,
    model_version TEXT    NOT NULL,
    features      TEXT    NOT NULL,         -- JSON object as received
    output        TEXT    NOT NULL,         -- JSON: prediction (+ probabilities)
    latency_us    INTEGER NOT NULL,         -- encode + forward pass
    anomaly_score REAL                      -- filled once anomaly scoring exists
) WITHOUT ROWID;

CREATE INDEX predictions_time ON predictions (time);

CREATE TABLE feedback (
    prediction_id TEXT    PRIMARY KEY REFERENCES predictions (id) ON DELETE CASCADE,
    time          INTEGER NOT NULL,
    label         TEXT    NOT NULL,         -- JSON value: class name or number
    revisions     INTEGER NOT NULL DEFAULT 0 -- times the label was replaced
);

CREATE TABLE models (
    version  TEXT    PRIMARY KEY,
    created  INTEGER NOT NULL,
    path     TEXT    NOT NULL,
    metrics  TEXT    NOT NULL,              -- JSON object
    sparsity REAL    NOT NULL DEFAULT 0,
    bits     INTEGER NOT NULL DEFAULT 32,
    status   TEXT    NOT NULL CHECK (status IN ('active', 'inactive')),
    parent   TEXT,
    source   TEXT    NOT NULL               -- how it came: bootstrap, import, ...
);

-- At most one active version.
CREATE UNIQUE INDEX models_one_active ON models (status) WHERE status = 'active';

-- A row the readiness probe rewrites to prove the database is writable.
CREATE TABLE heartbeat (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    time INTEGER NOT NULL
);
INSERT INTO heartbeat (id, time) VALUES (1, 0);
