-- PostgreSQL's 0010, in parity with ../0010_learner_cursor.sql: where the
-- leader's online learner is in `feedback`.
CREATE TABLE learner_cursor (
    id            BIGINT PRIMARY KEY CHECK (id = 1),
    time          BIGINT NOT NULL,
    prediction_id TEXT   NOT NULL
);
INSERT INTO learner_cursor (id, time, prediction_id) VALUES (1, 0, '');
