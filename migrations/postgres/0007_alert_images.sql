-- PostgreSQL's 0007, in parity with ../0007_alert_images.sql. Images shown inline
-- in an alert mail (multipart/related, referenced from its HTML part as
-- cid:<cid>): written with the outbox row, in the same transaction, and deleted
-- with it.
CREATE TABLE alert_images (
    alert_id BIGINT  NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    position BIGINT  NOT NULL,
    cid      TEXT    NOT NULL,              -- Content-ID, without angle brackets
    png      BYTEA   NOT NULL,
    PRIMARY KEY (alert_id, position)
);
