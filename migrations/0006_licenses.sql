-- Plans, licenses and their customers (SPEC §4 "Licenses", §9).

-- Read model of the `plans` projection. Prices in kuruş: exact, never floats.
CREATE TABLE plans (
    id                  uuid        PRIMARY KEY,
    slug                text        NOT NULL UNIQUE,
    name                text        NOT NULL,
    description         text,
    price_monthly       bigint      NOT NULL,
    price_yearly        bigint      NOT NULL,
    max_devices         integer     NOT NULL,
    monthly_token_limit bigint      NOT NULL,
    features            text[]      NOT NULL,
    is_active           boolean     NOT NULL,
    is_visible          boolean     NOT NULL,
    sort_order          integer     NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    last_position       bigint      NOT NULL
);

-- Read model of the `licenses` projection. Secrets only as ciphertext (`*_sealed`, under the
-- master key): the license key too, looked up by its keyed digest. Masks are what an admin
-- may see of a secret.
CREATE TABLE licenses (
    id                      uuid        PRIMARY KEY,
    key_sealed              text        NOT NULL,
    key_digest              text        NOT NULL UNIQUE,
    owner_name              text        NOT NULL,
    owner_email             text        NOT NULL,
    owner_phone             text,
    company_name            text        NOT NULL,
    company_vkn             text,
    package_type            text        NOT NULL,
    max_devices             integer     NOT NULL,
    monthly_token_limit     bigint      NOT NULL,
    -- active | suspended | revoked; "expired" is derived from expires_at when read.
    state                   text        NOT NULL,
    expires_at              timestamptz NOT NULL,
    lead_id                 uuid,
    gemini_key_sealed       text,
    gemini_key_mask         text,
    telegram_token_sealed   text,
    telegram_token_mask     text,
    telegram_bot_username   text,
    webhook_secret_sealed   text,
    telegram_webhook_active boolean     NOT NULL DEFAULT false,
    email_sent_at           timestamptz,
    current_devices         integer     NOT NULL DEFAULT 0,
    tokens_used_this_month  bigint      NOT NULL DEFAULT 0,
    last_active_at          timestamptz,
    -- Owner, company and e-mail folded for search (lower-case, Turkish letters to ASCII).
    search                  text        NOT NULL,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    last_position           bigint      NOT NULL
);
CREATE INDEX licenses_created_at ON licenses (created_at DESC, id);
CREATE INDEX licenses_expires_at ON licenses (expires_at);
CREATE INDEX licenses_package ON licenses (package_type);

-- The license's timeline, oldest first.
CREATE TABLE license_history (
    license_id uuid        NOT NULL,
    sequence   bigint      NOT NULL,
    action     text        NOT NULL,
    at         timestamptz NOT NULL,
    actor      text,
    details    jsonb       NOT NULL,
    PRIMARY KEY (license_id, sequence)
);

-- Write side: license keys handed out, by keyed digest, so a new key is unique before its
-- license is created (the read model follows the log and cannot be trusted for that).
CREATE TABLE license_keys (
    digest     text        PRIMARY KEY,
    license_id uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- License e-mails to send, filled by the `license_mail` projection (exactly once per
-- LicenseCreated / LicenseEmailRequested, in the same transaction as its checkpoint) and
-- drained by every instance's mail worker (`FOR UPDATE SKIP LOCKED`).
CREATE TABLE license_mail_outbox (
    license_id      uuid        NOT NULL,
    sequence        bigint      NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    last_error      text,
    PRIMARY KEY (license_id, sequence)
);
CREATE INDEX license_mail_outbox_due ON license_mail_outbox (next_attempt_at) WHERE sent_at IS NULL;
