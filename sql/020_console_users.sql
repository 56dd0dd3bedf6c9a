-- The finance console's people (issue 17): who may sign in, with which role, and their sessions.
--   * console_users: a name, a role (viewer: reads every page; resolver: may also act, e.g.
--     resolve or reopen a mismatch), and the password's argon2id hash (never the password: a
--     CHECK refuses anything that is not an argon2id hash). A user is disabled, never deleted,
--     so that whatever they did keeps naming them.
--   * console_sessions: one row per sign-in. The browser holds the session's id in Flask's
--     signed cookie; the table holds only its SHA-256, so that sign-out (or disabling the user)
--     ends it on every server process at once, and a copy of the table signs nobody in.
--   * console_signin_failures: failed sign-ins per name and source address, counted by every
--     server process alike (the throttle).

CREATE TABLE console_users (
    id                  bigserial PRIMARY KEY,
    name                text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    role                text NOT NULL CHECK (role IN ('viewer', 'resolver')),
    password_hash       text NOT NULL CHECK (password_hash ~ '^\$argon2id\$'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    disabled_at         timestamptz
);

CREATE TABLE console_sessions (
    id_sha256   bytea PRIMARY KEY CHECK (length(id_sha256) = 32),
    user_id     bigint NOT NULL REFERENCES console_users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    remote_addr text,
    CHECK (expires_at > created_at)
);
CREATE INDEX console_sessions_user_idx ON console_sessions (user_id) WHERE ended_at IS NULL;

CREATE TABLE console_signin_failures (
    name        text NOT NULL,
    remote_addr text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX console_signin_failures_pair_idx ON console_signin_failures (name, remote_addr, failed_at);
CREATE INDEX console_signin_failures_addr_idx ON console_signin_failures (remote_addr, failed_at);
