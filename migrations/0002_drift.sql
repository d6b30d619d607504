-- The drift job's results: one row per check. Times are Unix milliseconds (UTC).

CREATE TABLE drift_reports (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    time          INTEGER NOT NULL,
    model_version TEXT    NOT NULL,
    window_rows   INTEGER NOT NULL,
    drift         INTEGER NOT NULL,         -- any feature (or the output) drifts
    dataset_drift INTEGER NOT NULL,
    report        TEXT    NOT NULL          -- JSON, as GET /v1/drift answers
);

CREATE INDEX drift_reports_time ON drift_reports (time);
