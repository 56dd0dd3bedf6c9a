-- The finance console's people: users, their sessions, failed sign-ins (sql/020_console_users.sql).

-- name: console_user_add
INSERT INTO console_users (name, role, password_hash) VALUES (%(name)s, %(role)s, %(password_hash)s)
ON CONFLICT (name) DO NOTHING
RETURNING id, name, role, created_at;

-- name: console_users_list
SELECT id, name, role, created_at, password_changed_at, disabled_at,
       (SELECT count(*) FROM console_sessions s
        WHERE s.user_id = u.id AND s.ended_at IS NULL AND s.expires_at > now()) AS sessions
FROM console_users u ORDER BY name;

-- name: console_user_disable
-- A disabled user signs in no more, and every session of theirs ends at once.
WITH u AS (
    UPDATE console_users SET disabled_at = coalesce(disabled_at, now()) WHERE name = %(name)s RETURNING id
), s AS (
    UPDATE console_sessions SET ended_at = now() WHERE user_id IN (SELECT id FROM u) AND ended_at IS NULL
)
SELECT id FROM u;

-- name: console_user_for_signin
SELECT id, name, role, password_hash, disabled_at FROM console_users WHERE name = %(name)s;

-- name: console_user_rehash
UPDATE console_users SET password_hash = %(password_hash)s WHERE id = %(id)s;

-- name: console_session_start
INSERT INTO console_sessions (id_sha256, user_id, expires_at, remote_addr)
VALUES (%(id_sha256)s, %(user_id)s, now() + make_interval(hours => %(hours)s), %(remote_addr)s);

-- name: console_session_user
-- The user of a live session (not ended, not expired, the user not disabled).
SELECT u.id, u.name, u.role, s.expires_at
FROM console_sessions s JOIN console_users u ON u.id = s.user_id
WHERE s.id_sha256 = %(id_sha256)s AND s.ended_at IS NULL AND s.expires_at > now() AND u.disabled_at IS NULL;

-- name: console_session_end
UPDATE console_sessions SET ended_at = now() WHERE id_sha256 = %(id_sha256)s AND ended_at IS NULL;

-- name: console_signin_lock
-- Attempts of one name from one address take their turn (each counts the ones before it),
-- whichever server process they reach; the key comes from worker/db.py.
SELECT pg_advisory_xact_lock(%(key)s, hashtext(%(name)s || '/' || %(remote_addr)s));

-- name: console_signin_attempt
-- A sign-in attempt is counted as a failure before its password is checked (so that attempts
-- running at once in several server processes all count), and taken back if it succeeds.
-- Returns the failures within the window of this name from this address, and of this address.
WITH ins AS (
    INSERT INTO console_signin_failures (name, remote_addr) VALUES (%(name)s, %(remote_addr)s)
    RETURNING failed_at
)
SELECT 1 + (SELECT count(*) FROM console_signin_failures f
            WHERE f.name = %(name)s AND f.remote_addr = %(remote_addr)s
              AND f.failed_at > ins.failed_at - make_interval(secs => %(window)s)) AS pair_failures,
       1 + (SELECT count(*) FROM console_signin_failures f
            WHERE f.remote_addr = %(remote_addr)s
              AND f.failed_at > ins.failed_at - make_interval(secs => %(window)s)) AS address_failures,
       (SELECT min(f.failed_at) FROM console_signin_failures f
        WHERE f.name = %(name)s AND f.remote_addr = %(remote_addr)s
          AND f.failed_at > ins.failed_at - make_interval(secs => %(window)s)) AS oldest
FROM ins;

-- name: console_signin_succeeded
-- The right password: the attempt is not a failure, and this name's earlier failures from this
-- address are forgiven. Failures older than a day are pruned.
WITH forgiven AS (
    DELETE FROM console_signin_failures WHERE name = %(name)s AND remote_addr = %(remote_addr)s
)
DELETE FROM console_signin_failures WHERE failed_at < now() - interval '1 day';
