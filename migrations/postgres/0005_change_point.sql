-- PostgreSQL's 0005, in parity with ../0005_change_point.sql. Where a
-- concept-drift run's training rows begin: the detector's change point (Unix ms
-- of the first prediction after the change); NULL for other runs.
ALTER TABLE retrain_runs ADD COLUMN change_time BIGINT;
