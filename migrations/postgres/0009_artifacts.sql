-- PostgreSQL's 0009, in parity with ../0009_artifacts.sql: model artifacts in
-- the database, so that every replica loads any version from the registry.
CREATE TABLE model_artifacts (
    version TEXT  PRIMARY KEY REFERENCES models (version) ON DELETE CASCADE,
    bytes   BYTEA NOT NULL
);
