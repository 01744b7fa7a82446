-- Devices of licenses (SPEC §4 "Devices", §5 verify; ADR 0010). Written by the `licenses`
-- projection together with the license rows, so `licenses.current_devices` and these rows
-- never disagree. `last_active_at` is telemetry: a throttled plain UPDATE by verify, not an
-- event (a rebuild starts it again from the registration time).
CREATE TABLE devices (
    id            uuid        PRIMARY KEY,
    license_id    uuid        NOT NULL,
    fingerprint   text        NOT NULL,
    device_name   text        NOT NULL,
    os_type       text        NOT NULL,
    os_version    text        NOT NULL,
    app_version   text        NOT NULL,
    ip_address    text,
    -- pending | approved | blocked | released
    status        text        NOT NULL,
    is_master     boolean     NOT NULL,
    last_active_at timestamptz,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    UNIQUE (license_id, fingerprint)
);
CREATE INDEX devices_license ON devices (license_id, created_at);
