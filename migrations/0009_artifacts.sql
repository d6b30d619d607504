-- Model artifacts in the database (issue 19): the bytes of each version's file,
-- written in the registry's transaction, so that a replica on another machine
-- loads any version from the registry alone (no shared file system). The file
-- under model.dir stays a cache of these bytes; a retired version's row goes
-- with its file.
CREATE TABLE model_artifacts (
    version TEXT PRIMARY KEY REFERENCES models (version) ON DELETE CASCADE,
    bytes   BLOB NOT NULL
);
