-- netfold's log on PostgreSQL (ADR 0008). Every log of a store is a row of netfold_logs (its
-- durable head and chain tip) and its records are rows of netfold_records: the same stored bytes
-- as sled's (store/src/codec.rs: format, schema, prev hash, CRC, payload), one row per record.

CREATE TABLE netfold_logs (
    name text PRIMARY KEY,
    -- The last committed sequence number (0: empty) and the hash of that record: an append
    -- moves both in the transaction that inserts its records, guarded by the head it chained
    -- after, so the sequence stays gapless whoever appends.
    head bigint NOT NULL DEFAULT 0 CHECK (head >= 0),
    tip bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
        CHECK (length(tip) = 32)
);

CREATE TABLE netfold_records (
    log text NOT NULL REFERENCES netfold_logs (name),
    seq bigint NOT NULL CHECK (seq >= 1),
    value bytea NOT NULL,
    PRIMARY KEY (log, seq)
);

CREATE TABLE netfold_snapshots (
    log text NOT NULL REFERENCES netfold_logs (name),
    seq bigint NOT NULL CHECK (seq >= 0),
    bytes bytea NOT NULL,
    PRIMARY KEY (log, seq)
);

CREATE TABLE netfold_checkpoints (
    log text NOT NULL REFERENCES netfold_logs (name),
    name text NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 0),
    PRIMARY KEY (log, name)
);

-- The small key-value tables (store::Table: the policy, the ownership ledger).
CREATE TABLE netfold_tables (
    tbl text NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tbl, key)
);

-- A committed append tells every listener its log's new head: `<name> <head>` on the channel
-- netfold_log, delivered when (and only if) the transaction commits.
CREATE FUNCTION netfold_log_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('netfold_log', NEW.name || ' ' || NEW.head::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER netfold_log_moved AFTER UPDATE OF head ON netfold_logs
    FOR EACH ROW WHEN (NEW.head <> OLD.head) EXECUTE FUNCTION netfold_log_moved();
