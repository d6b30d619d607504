-- Where the online learner is in `feedback` (issue 19): the (time, prediction_id)
-- of the last label handed to it. With several replicas on PostgreSQL the
-- leader's learner reads the labels every replica stored from the database, in
-- (time, prediction_id) order, and moves this on, so that a new leader resumes
-- where the old one stopped and no label is learned twice. Unused on SQLite,
-- where the one daemon hands each label to its learner as it stores it.
CREATE TABLE learner_cursor (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    time          INTEGER NOT NULL,
    prediction_id TEXT    NOT NULL
);
INSERT INTO learner_cursor (id, time, prediction_id) VALUES (1, 0, '');
