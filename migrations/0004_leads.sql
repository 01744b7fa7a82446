-- Leads: the read models of the admin panel, and the write side's contact reservations.

-- Trigram search over the folded name/e-mail/phone/company (pg_trgm is a trusted extension).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- One row per lead, built by the "leads" projection. Personal fields hold '[silindi]' once
-- the lead is erased (or when a rebuild finds its data key shredded).
CREATE TABLE leads (
    id             uuid        PRIMARY KEY,
    name           text        NOT NULL,
    email          text        NOT NULL,
    phone          text        NOT NULL,
    company        text,
    message        text,
    source         text        NOT NULL,
    utm_source     text,
    utm_campaign   text,
    status         text        NOT NULL,
    assigned_to    text,
    notes          text,
    -- lower-cased, Turkish letters folded to ASCII: what `search` matches against
    search         text        NOT NULL DEFAULT '',
    erased         boolean     NOT NULL DEFAULT false,
    resubmissions  integer     NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    -- position of the event that last changed the row
    last_position  bigint      NOT NULL
);
CREATE INDEX leads_created_at ON leads (created_at DESC, id);
CREATE INDEX leads_status_created_at ON leads (status, created_at DESC);
CREATE INDEX leads_search ON leads USING gin (search gin_trgm_ops);

-- The timeline of each lead, oldest first. (lead_id, sequence) makes a replayed event a no-op.
CREATE TABLE lead_history (
    lead_id   uuid        NOT NULL,
    sequence  bigint      NOT NULL,
    action    text        NOT NULL,
    at        timestamptz NOT NULL,
    actor     text,
    details   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (lead_id, sequence)
);

-- Write-side set validation: which open lead owns a normalised e-mail or phone (as keyed
-- digests, never in clear). The landing endpoint reserves here before appending LeadCreated,
-- so two submissions of one contact cannot both create a lead. Rows go when the lead closes
-- (converted, lost) or is erased; a stale row is detected and replaced on the next use.
CREATE TABLE lead_contacts (
    digest     text        PRIMARY KEY,
    lead_id    uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lead_contacts_lead ON lead_contacts (lead_id);

-- Idempotency-Key: the first answer to a keyed request, replayed for retries.
CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    status       integer,
    body         jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
