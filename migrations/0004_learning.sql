-- The continuous-learning loop: model versions made by online updates and
-- retraining, their activation history, and the retraining runs.
-- Times are Unix milliseconds (UTC).

-- `models` gains the online step count, the last activation time (the previous
-- version is the inactive one activated most recently), and the status
-- `retired` (the artifact was deleted by model.keep_versions; the row stays so
-- that logged predictions keep naming a known version). SQLite cannot change a
-- CHECK constraint in place, so the table is rebuilt.
CREATE TABLE models_new (
    version        TEXT    PRIMARY KEY,
    created        INTEGER NOT NULL,
    path           TEXT    NOT NULL,
    metrics        TEXT    NOT NULL,
    sparsity       REAL    NOT NULL DEFAULT 0,
    bits           INTEGER NOT NULL DEFAULT 32,
    status         TEXT    NOT NULL CHECK (status IN ('active', 'inactive', 'retired')),
    parent         TEXT,
    source         TEXT    NOT NULL,        -- bootstrap, import, online, retrain
    online_updates INTEGER NOT NULL DEFAULT 0,
    activated      INTEGER                  -- last time it became active
);
INSERT INTO models_new (version, created, path, metrics, sparsity, bits, status, parent, source, activated)
    SELECT version, created, path, metrics, sparsity, bits, status, parent, source,
           CASE WHEN status = 'active' THEN created END
    FROM models;
DROP TABLE models;
ALTER TABLE models_new RENAME TO models;
CREATE UNIQUE INDEX models_one_active ON models (status) WHERE status = 'active';

CREATE TABLE retrain_runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger           TEXT    NOT NULL,     -- schedule, api, dataset_drift, concept_drift
    started           INTEGER NOT NULL,
    finished          INTEGER,
    state             TEXT    NOT NULL
                      CHECK (state IN ('running', 'promoted', 'rejected', 'skipped', 'failed')),
    rows              INTEGER,              -- labelled rows found in the window
    train_rows        INTEGER,              -- rows trained on (with any original data)
    holdout_rows      INTEGER,              -- newest labelled rows the gate scores on
    metric            TEXT,                 -- accuracy or r2
    live_version      TEXT,
    live_metric       REAL,
    candidate_metric  REAL,
    candidate_version TEXT,                 -- the registered version, when promoted
    decision          TEXT,                 -- why: the gate's reason, the skip's, the error's
    report            TEXT,                 -- JSON: the training report
    error             TEXT
);

CREATE INDEX retrain_runs_started ON retrain_runs (started);

-- Feedback is read by time when a retrain gathers its window.
CREATE INDEX feedback_time ON feedback (time);
