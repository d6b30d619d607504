-- Where a concept-drift run's training rows begin: the detector's change point
-- (Unix ms of the first prediction after the change); NULL for other runs.
ALTER TABLE retrain_runs ADD COLUMN change_time INTEGER;
