-- The cluster's leader (issue 19, docs/CLUSTER.md): one row, the current epoch,
-- the replica that holds it and its lease (Unix ms). Written only on PostgreSQL,
-- by src/cluster/leader.rs; on SQLite (one process, no election) it stays as
-- created, and exists so that both backends keep one schema.
CREATE TABLE cluster_leader (
    epoch       INTEGER NOT NULL,   -- 0 until a leader is first elected
    holder      TEXT    NOT NULL,   -- the leader's replica id ('' before the first)
    lease_until INTEGER NOT NULL    -- Unix ms, by the database's clock
);
INSERT INTO cluster_leader (epoch, holder, lease_until) VALUES (0, '', 0);
