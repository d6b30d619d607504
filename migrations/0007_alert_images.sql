-- Images shown inline in an alert mail (multipart/related, referenced from its
-- HTML part as cid:<cid>): written with the outbox row, in the same transaction,
-- and deleted with it.
CREATE TABLE alert_images (
    alert_id INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    cid      TEXT    NOT NULL,              -- Content-ID, without angle brackets
    png      BLOB    NOT NULL,
    PRIMARY KEY (alert_id, position)
);
