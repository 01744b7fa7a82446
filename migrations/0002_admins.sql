-- Admin access: the admin users read model and the refresh-token sessions.

-- One row per admin, built by the "admins" projection from the AdminUser stream
-- (AdminCreated, AdminRenamed, AdminRoleChanged, AdminDeactivated, AdminReactivated,
-- AdminPasswordChanged, AdminLoggedIn). Like every read model it can be dropped and rebuilt
-- by replay; nothing else writes it.
CREATE TABLE admin_users (
    -- Derived from the normalised e-mail (see src/auth/users.rs), so the event store's
    -- per-stream version check is what keeps e-mails unique, even across instances.
    id             uuid        PRIMARY KEY,
    -- trimmed, lower-cased
    email          text        NOT NULL UNIQUE,
    name           text        NOT NULL,
    -- super_admin | admin | viewer
    role           text        NOT NULL,
    -- leads, licenses, users, analytics, settings, audit (a super admin holds all)
    permissions    text[]      NOT NULL DEFAULT '{}',
    active         boolean     NOT NULL DEFAULT true,
    -- bcrypt (cost 12); never leaves the gateway
    password_hash  text        NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    last_login_at  timestamptz,
    last_login_ip  text,
    -- the stream version and log position of the event that last changed the row
    version        bigint      NOT NULL,
    last_position  bigint      NOT NULL
);
CREATE INDEX admin_users_created_at ON admin_users (created_at, id);
-- "The last active super admin cannot be removed" counts these.
CREATE INDEX admin_users_active_super ON admin_users (role) WHERE active;

-- Refresh tokens are session state, not domain events (ops/adr/0004): rotated on every
-- refresh, revoked by family on reuse or logout, and deleted when long expired.
CREATE TABLE refresh_tokens (
    id          uuid        PRIMARY KEY,
    -- No foreign key to admin_users: that table is a read model and may be rebuilt.
    admin_id    uuid        NOT NULL,
    -- All tokens descending from one login. An access token names its family (`sid`), so
    -- revoking the family also ends the access tokens issued with it.
    family_id   uuid        NOT NULL,
    -- SHA-256 of the opaque token; the token itself is never stored.
    token_hash  bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    -- Set when this token was exchanged for its successor. Presenting it again is reuse:
    -- the whole family is revoked.
    rotated_at  timestamptz,
    revoked_at  timestamptz,
    ip          text,
    user_agent  text
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_admin ON refresh_tokens (admin_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);
