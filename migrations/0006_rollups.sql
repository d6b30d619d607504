-- The dashboard's data (issue 18): per-minute rollups of the prediction log and of
-- feedback, so that no endpoint scans `predictions`; the activation history; and
-- each drift check's per-feature numbers beside its report. Times are Unix
-- milliseconds (UTC); a minute is the Unix ms of its start.
--
-- Upgrading backfills the rollups from the rows already stored: one scan of
-- `predictions` and one of `feedback` (docs/OPERATIONS.md says how long it takes
-- on a large log). From then on the log writer and the feedback committer keep
-- them, in the same transaction as the rows they count.

-- Whether the answer said `anomaly: true` (the score over the model's threshold,
-- which lives in the model, not in the log). NULL for rows logged before this
-- migration.
ALTER TABLE predictions ADD COLUMN anomaly INTEGER;

-- Per minute and model version: predictions, anomalies, the sum of latency_us
-- (encode + forward pass) and its histogram over fixed bounds
-- (store::rollups::LATENCY_BOUNDS_US): column lat_le_N counts the rows with
-- latency_us <= N and above the bound before; lat_gt_1000000 those over 1 s.
CREATE TABLE prediction_rollups (
    minute          INTEGER NOT NULL,
    model_version   TEXT    NOT NULL,
    predictions     INTEGER NOT NULL DEFAULT 0,
    anomalies       INTEGER NOT NULL DEFAULT 0,
    latency_us_sum  INTEGER NOT NULL DEFAULT 0,
    lat_le_1        INTEGER NOT NULL DEFAULT 0,
    lat_le_2        INTEGER NOT NULL DEFAULT 0,
    lat_le_3        INTEGER NOT NULL DEFAULT 0,
    lat_le_4        INTEGER NOT NULL DEFAULT 0,
    lat_le_5        INTEGER NOT NULL DEFAULT 0,
    lat_le_6        INTEGER NOT NULL DEFAULT 0,
    lat_le_8        INTEGER NOT NULL DEFAULT 0,
    lat_le_10       INTEGER NOT NULL DEFAULT 0,
    lat_le_13       INTEGER NOT NULL DEFAULT 0,
    lat_le_16       INTEGER NOT NULL DEFAULT 0,
    lat_le_20       INTEGER NOT NULL DEFAULT 0,
    lat_le_25       INTEGER NOT NULL DEFAULT 0,
    lat_le_32       INTEGER NOT NULL DEFAULT 0,
    lat_le_40       INTEGER NOT NULL DEFAULT 0,
    lat_le_50       INTEGER NOT NULL DEFAULT 0,
    lat_le_63       INTEGER NOT NULL DEFAULT 0,
    lat_le_80       INTEGER NOT NULL DEFAULT 0,
    lat_le_100      INTEGER NOT NULL DEFAULT 0,
    lat_le_130      INTEGER NOT NULL DEFAULT 0,
    lat_le_160      INTEGER NOT NULL DEFAULT 0,
    lat_le_200      INTEGER NOT NULL DEFAULT 0,
    lat_le_250      INTEGER NOT NULL DEFAULT 0,
    lat_le_320      INTEGER NOT NULL DEFAULT 0,
    lat_le_400      INTEGER NOT NULL DEFAULT 0,
    lat_le_500      INTEGER NOT NULL DEFAULT 0,
    lat_le_630      INTEGER NOT NULL DEFAULT 0,
    lat_le_800      INTEGER NOT NULL DEFAULT 0,
    lat_le_1000     INTEGER NOT NULL DEFAULT 0,
    lat_le_1300     INTEGER NOT NULL DEFAULT 0,
    lat_le_1600     INTEGER NOT NULL DEFAULT 0,
    lat_le_2000     INTEGER NOT NULL DEFAULT 0,
    lat_le_2500     INTEGER NOT NULL DEFAULT 0,
    lat_le_3200     INTEGER NOT NULL DEFAULT 0,
    lat_le_4000     INTEGER NOT NULL DEFAULT 0,
    lat_le_5000     INTEGER NOT NULL DEFAULT 0,
    lat_le_6300     INTEGER NOT NULL DEFAULT 0,
    lat_le_8000     INTEGER NOT NULL DEFAULT 0,
    lat_le_10000    INTEGER NOT NULL DEFAULT 0,
    lat_le_20000    INTEGER NOT NULL DEFAULT 0,
    lat_le_50000    INTEGER NOT NULL DEFAULT 0,
    lat_le_100000   INTEGER NOT NULL DEFAULT 0,
    lat_le_1000000  INTEGER NOT NULL DEFAULT 0,
    lat_gt_1000000  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, model_version)
) WITHOUT ROWID;

-- Per minute in which labels arrived and the labelled predictions' model version:
-- labels, labels equal to the predicted class (classification), and the sums of
-- the absolute and squared errors (regression). A replaced label is taken out of
-- the minute of the label it replaces and counted in its own.
CREATE TABLE feedback_rollups (
    minute         INTEGER NOT NULL,
    model_version  TEXT    NOT NULL,
    labels         INTEGER NOT NULL DEFAULT 0,
    correct        INTEGER NOT NULL DEFAULT 0,
    abs_error_sum  REAL    NOT NULL DEFAULT 0,
    sq_error_sum   REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, model_version)
) WITHOUT ROWID;

-- Every time a version became the live one, and why: the new version's source
-- (bootstrap, import, retrain, online, upload, onnx) when it went live as it was
-- registered; `rollback` or `rollforward` for an activation through the API (of a
-- version older or newer than the one it replaced); `revert` when the online
-- guard went back to the base version.
CREATE TABLE activations (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time     INTEGER NOT NULL,
    version  TEXT    NOT NULL,
    previous TEXT,
    reason   TEXT    NOT NULL
);
CREATE INDEX activations_time ON activations (time);

-- Each drift check's numbers per input feature (subject `input`) and for the
-- model's output (subject `output`, feature `prediction`): the history charts
-- read these instead of parsing every report.
CREATE TABLE drift_features (
    report_id  INTEGER NOT NULL REFERENCES drift_reports (id) ON DELETE CASCADE,
    subject    TEXT    NOT NULL,
    feature    TEXT    NOT NULL,
    statistic  REAL,
    p_value    REAL,
    p_adjusted REAL,
    psi        REAL,
    drift      INTEGER NOT NULL,
    PRIMARY KEY (report_id, subject, feature)
) WITHOUT ROWID;

-- Backfill. Rows logged before this migration carry no anomaly flag: a version's
-- threshold is taken from its drift reports (`anomaly.threshold`); the rows of a
-- version never checked count no anomalies.
INSERT INTO prediction_rollups (minute, model_version, predictions, anomalies, latency_us_sum,
    lat_le_1, lat_le_2, lat_le_3, lat_le_4, lat_le_5, lat_le_6, lat_le_8, lat_le_10,
    lat_le_13, lat_le_16, lat_le_20, lat_le_25, lat_le_32, lat_le_40, lat_le_50,
    lat_le_63, lat_le_80, lat_le_100, lat_le_130, lat_le_160, lat_le_200, lat_le_250,
    lat_le_320, lat_le_400, lat_le_500, lat_le_630, lat_le_800, lat_le_1000,
    lat_le_1300, lat_le_1600, lat_le_2000, lat_le_2500, lat_le_3200, lat_le_4000,
    lat_le_5000, lat_le_6300, lat_le_8000, lat_le_10000, lat_le_20000, lat_le_50000,
    lat_le_100000, lat_le_1000000, lat_gt_1000000)
SELECT (p.time / 60000) * 60000, p.model_version, COUNT(*),
       COALESCE(SUM(p.anomaly_score > t.threshold), 0), SUM(p.latency_us),
       SUM(latency_us <= 1),
       SUM(latency_us > 1 AND latency_us <= 2),
       SUM(latency_us > 2 AND latency_us <= 3),
       SUM(latency_us > 3 AND latency_us <= 4),
       SUM(latency_us > 4 AND latency_us <= 5),
       SUM(latency_us > 5 AND latency_us <= 6),
       SUM(latency_us > 6 AND latency_us <= 8),
       SUM(latency_us > 8 AND latency_us <= 10),
       SUM(latency_us > 10 AND latency_us <= 13),
       SUM(latency_us > 13 AND latency_us <= 16),
       SUM(latency_us > 16 AND latency_us <= 20),
       SUM(latency_us > 20 AND latency_us <= 25),
       SUM(latency_us > 25 AND latency_us <= 32),
       SUM(latency_us > 32 AND latency_us <= 40),
       SUM(latency_us > 40 AND latency_us <= 50),
       SUM(latency_us > 50 AND latency_us <= 63),
       SUM(latency_us > 63 AND latency_us <= 80),
       SUM(latency_us > 80 AND latency_us <= 100),
       SUM(latency_us > 100 AND latency_us <= 130),
       SUM(latency_us > 130 AND latency_us <= 160),
       SUM(latency_us > 160 AND latency_us <= 200),
       SUM(latency_us > 200 AND latency_us <= 250),
       SUM(latency_us > 250 AND latency_us <= 320),
       SUM(latency_us > 320 AND latency_us <= 400),
       SUM(latency_us > 400 AND latency_us <= 500),
       SUM(latency_us > 500 AND latency_us <= 630),
       SUM(latency_us > 630 AND latency_us <= 800),
       SUM(latency_us > 800 AND latency_us <= 1000),
       SUM(latency_us > 1000 AND latency_us <= 1300),
       SUM(latency_us > 1300 AND latency_us <= 1600),
       SUM(latency_us > 1600 AND latency_us <= 2000),
       SUM(latency_us > 2000 AND latency_us <= 2500),
       SUM(latency_us > 2500 AND latency_us <= 3200),
       SUM(latency_us > 3200 AND latency_us <= 4000),
       SUM(latency_us > 4000 AND latency_us <= 5000),
       SUM(latency_us > 5000 AND latency_us <= 6300),
       SUM(latency_us > 6300 AND latency_us <= 8000),
       SUM(latency_us > 8000 AND latency_us <= 10000),
       SUM(latency_us > 10000 AND latency_us <= 20000),
       SUM(latency_us > 20000 AND latency_us <= 50000),
       SUM(latency_us > 50000 AND latency_us <= 100000),
       SUM(latency_us > 100000 AND latency_us <= 1000000),
       SUM(latency_us > 1000000)
FROM predictions p
LEFT JOIN (SELECT model_version, MAX(json_extract(report, '$.anomaly.threshold')) AS threshold
           FROM drift_reports GROUP BY model_version) t
       ON t.model_version = p.model_version
GROUP BY 1, 2;

-- The outcome as store::rollups::outcome computes it: a class label equal to the
-- predicted class is correct; a regression label's error is label - prediction.
INSERT INTO feedback_rollups (minute, model_version, labels, correct, abs_error_sum, sq_error_sum)
SELECT (f.time / 60000) * 60000, p.model_version, COUNT(*),
       TOTAL(json_type(p.output, '$.prediction') = 'text'
             AND json_extract(p.output, '$.prediction') = json_extract(f.label, '$')),
       TOTAL(CASE WHEN json_type(p.output, '$.prediction') IN ('integer', 'real')
                  THEN abs(json_extract(f.label, '$') - json_extract(p.output, '$.prediction')) END),
       TOTAL(CASE WHEN json_type(p.output, '$.prediction') IN ('integer', 'real')
                  THEN (json_extract(f.label, '$') - json_extract(p.output, '$.prediction'))
                     * (json_extract(f.label, '$') - json_extract(p.output, '$.prediction')) END)
FROM feedback f JOIN predictions p ON p.id = f.prediction_id
GROUP BY 1, 2;

-- The registry kept only each version's last activation: one row per version
-- that was ever live (one activated more than ten minutes after it was made is
-- counted a rollback).
INSERT INTO activations (time, version, reason)
SELECT activated, version,
       CASE WHEN activated > created + 600000 THEN 'rollback' ELSE source END
FROM models WHERE activated IS NOT NULL
ORDER BY activated;

INSERT INTO drift_features (report_id, subject, feature, statistic, p_value, p_adjusted, psi, drift)
SELECT r.id, 'input', json_extract(f.value, '$.name'), json_extract(f.value, '$.statistic'),
       json_extract(f.value, '$.p_value'), json_extract(f.value, '$.p_adjusted'),
       json_extract(f.value, '$.psi'), COALESCE(json_extract(f.value, '$.drift'), 0)
FROM drift_reports r, json_each(r.report, '$.features') f
WHERE json_valid(r.report);

INSERT INTO drift_features (report_id, subject, feature, statistic, p_value, p_adjusted, psi, drift)
SELECT id, 'output', 'prediction', json_extract(report, '$.prediction.statistic'),
       json_extract(report, '$.prediction.p_value'),
       json_extract(report, '$.prediction.p_adjusted'),
       json_extract(report, '$.prediction.psi'),
       COALESCE(json_extract(report, '$.prediction.drift'), 0)
FROM drift_reports
WHERE json_valid(report) AND json_type(report, '$.prediction') = 'object';
