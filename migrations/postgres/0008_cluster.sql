-- PostgreSQL's 0008, in parity with ../0008_cluster.sql. The cluster's leader
-- (docs/CLUSTER.md): one row, the current epoch, the replica that holds it and its
-- lease (Unix ms, by this server's clock). The elector (src/cluster/leader.rs)
-- increments the epoch when it wins the advisory lock and renews the lease;
-- a fenced write reads the epoch FOR KEY SHARE inside its own transaction.
-- No key columns on purpose: every UPDATE of the row is then a NO KEY UPDATE,
-- which FOR KEY SHARE does not block, so a long fenced write never delays a
-- renewal (the takeover's SELECT ... FOR UPDATE does wait for it).
CREATE TABLE cluster_leader (
    epoch       BIGINT NOT NULL,    -- 0 until a leader is first elected
    holder      TEXT   NOT NULL,    -- the leader's replica id ('' before the first)
    lease_until BIGINT NOT NULL     -- Unix ms, by the database's clock
);
INSERT INTO cluster_leader (epoch, holder, lease_until) VALUES (0, '', 0);
