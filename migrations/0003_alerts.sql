-- Alert mail. Times are Unix milliseconds (UTC).

-- The outbox: one row per notification, written before any attempt to send it.
CREATE TABLE alerts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created      INTEGER NOT NULL,
    group_key    TEXT    NOT NULL,              -- the alert rule
    kind         TEXT    NOT NULL,              -- firing | resolved | summary | test
    subject      TEXT    NOT NULL,
    body_text    TEXT    NOT NULL,
    body_html    TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,              -- without angle brackets
    thread       TEXT    NOT NULL DEFAULT '[]', -- JSON: earlier Message-IDs of the group
    recipients   TEXT    NOT NULL,              -- JSON array
    alerts       TEXT    NOT NULL DEFAULT '[]', -- JSON: the alerts the mail is about
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'held', 'summarized')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_error   TEXT,
    sent_at      INTEGER
);

CREATE INDEX alerts_due ON alerts (state, next_attempt);
CREATE INDEX alerts_created ON alerts (created);

-- The alert rules' state (alerts and groups, as JSON), so that a restart neither
-- repeats nor forgets a notification.
CREATE TABLE alert_rules (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT    NOT NULL
);

CREATE TABLE silences (
    id         TEXT    PRIMARY KEY,
    matchers   TEXT    NOT NULL,                -- JSON: [{"name", "value"}]
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    comment    TEXT    NOT NULL
);
