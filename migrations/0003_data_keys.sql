-- Data keys for crypto-shredding (SPEC §8, eventstore/src/sealing.rs).
--
-- Personal fields in events are sealed with a key per subject (e.g. 'lead:<uuid>'). The keys
-- live here, apart from the immutable events, so that erasing a subject is deleting one row:
-- afterwards nothing can open that subject's sealed values. Unlike `events`, this table is
-- meant to be deleted from; no trigger guards it.
--
-- Backups: a restored copy of this table brings back keys shredded since the backup was
-- taken. After a restore, shred again every subject erased since then (the log's erasure
-- events name them).

CREATE TABLE data_keys (
    subject       text        PRIMARY KEY,
    -- First 8 hex digits of SHA-256 of the data key; every sealed value names it, so a key
    -- created after a shred is told apart from the shredded one.
    key_id        text        NOT NULL CHECK (key_id ~ '^[0-9a-f]{8}$'),
    -- The ENCRYPTION_KEY that wrapped the key (same kind of id). Rotating the master key
    -- rewraps these rows; events never change.
    master_key_id text        NOT NULL CHECK (master_key_id ~ '^[0-9a-f]{8}$'),
    -- nonce (12) ‖ AES-256-GCM(master key, data key (32), aad = subject) ‖ tag (16).
    -- Never the data key in clear.
    wrapped_key   bytea       NOT NULL CHECK (octet_length(wrapped_key) = 60),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Tombstones of shredded keys: which key a subject had and when it was shredded, no key
-- material. They let a reader tell "erased" (shows '[silindi]') from "sealed for another
-- subject" or "key lost" (an error, not a silent blank).
CREATE TABLE shredded_data_keys (
    subject     text        NOT NULL,
    key_id      text        NOT NULL,
    shredded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, key_id)
);
