-- Named queries of the notify pipeline (worker/pipeline/). Parameters are psycopg placeholders.

-- name: inbox_store
-- One statement, one round trip: store a new body, or find the row of the same body.
-- A new row is stored as 'queued' since the ingress hands it to the queue right after answering;
-- if that fails, inbox_mark_not_queued sets it back to 'received' (redrive takes both alike).
-- No row comes back when the same body is being stored concurrently (not yet visible):
-- the caller then reads it with inbox_by_hash.
WITH new_row AS (
    INSERT INTO inbox (body_sha256, body, pan_masked, content_type, family, remote_addr, mch_id, pay_order_id,
                       received_at, verified_at, state, queued_at)
    VALUES (%(body_sha256)s, %(body)s, %(pan_masked)s, %(content_type)s, %(family)s, %(remote_addr)s, %(mch_id)s,
            %(pay_order_id)s, %(received_at)s, %(verified_at)s, 'queued', %(received_at)s)
    ON CONFLICT (body_sha256) DO NOTHING
    RETURNING id, state
)
SELECT id, state, false AS duplicate FROM new_row
UNION ALL
SELECT id, state, true AS duplicate FROM inbox
WHERE body_sha256 = %(body_sha256)s AND NOT EXISTS (SELECT 1 FROM new_row)

-- name: inbox_by_hash
SELECT id, state FROM inbox WHERE body_sha256 = %(body_sha256)s

-- name: inbox_mark_not_queued
-- The enqueue after the answer failed (Redis down): say so; redrive will queue it.
UPDATE inbox SET state = 'received', queued_at = NULL, updated_at = now()
WHERE id = %(id)s AND state = 'queued'

-- name: inbox_mark_queued
-- A row that could not be queued was queued after all (its duplicate arrived with Redis back).
UPDATE inbox SET state = 'queued', queued_at = now(), updated_at = now()
WHERE id = %(id)s AND state = 'received'

-- name: inbox_load
SELECT id, body, pan_masked, content_type, family, remote_addr, mch_id, pay_order_id, received_at, verified_at,
       state, outcome, reason, attempts, redrives, queued_at, processed_at
FROM inbox WHERE id = %(id)s

-- name: inbox_states
-- Messages' first look at their rows: one indexed read, no lock (a row another batch finished is
-- acknowledged on it).
SELECT id, state, outcome, reason, pay_order_id FROM inbox WHERE id = ANY(%(ids)s::bigint[])

-- name: inbox_claim
-- A message's own rows, locked for its batch: waits for a batch that holds one. In id order, as
-- every batch takes them.
SELECT id, body, pan_masked, content_type, family, remote_addr, mch_id, pay_order_id, received_at, verified_at,
       state, outcome, reason, attempts, redrives, queued_at, processed_at
FROM inbox
WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE

-- name: inbox_claim_unless_locked
-- A message's own rows, locked for its batch, but those another batch holds (left out).
SELECT id, body, pan_masked, content_type, family, remote_addr, mch_id, pay_order_id, received_at, verified_at,
       state, outcome, reason, attempts, redrives, queued_at, processed_at
FROM inbox
WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE SKIP LOCKED

-- name: inbox_claim_ready
-- Up to `limit` other rows waiting for the ledger, oldest first (the index inbox_unfinished_idx),
-- locked for this batch. SKIP LOCKED: concurrent batches neither take one row twice nor wait on
-- each other; a row another batch finished meanwhile no longer matches.
SELECT id, body, pan_masked, content_type, family, remote_addr, mch_id, pay_order_id, received_at, verified_at,
       state, outcome, reason, attempts, redrives, queued_at, processed_at
FROM inbox
WHERE state IN ('received', 'queued') AND id <> ALL(%(ids)s::bigint[])
ORDER BY coalesce(queued_at, received_at)
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: inbox_mark_batch
-- Every row of a batch with its outcome, in the transaction of its postings. The same rules as
-- inbox_mark_done (state 'done': the first outcome stands) and inbox_mark_failed (state 'failed':
-- never overrides a row that was already done), for many rows in one statement.
UPDATE inbox
SET state = CASE WHEN inbox.state = 'done' THEN 'done' ELSE r.state END,
    outcome = CASE WHEN inbox.state = 'done' THEN inbox.outcome ELSE r.outcome END,
    reason = CASE WHEN inbox.state = 'done' THEN inbox.reason ELSE r.reason END,
    attempts = inbox.attempts + 1,
    processed_at = CASE WHEN r.state = 'done' THEN coalesce(inbox.processed_at, now()) ELSE now() END,
    updated_at = now()
FROM unnest(%(ids)s::bigint[], %(states)s::text[], %(outcomes)s::text[], %(reasons)s::text[]) AS r (id, state, outcome, reason)
WHERE inbox.id = r.id AND (r.state = 'done' OR inbox.state <> 'done')
RETURNING inbox.id, inbox.outcome

-- name: inbox_mark_done
-- The first outcome stands: a second delivery of the same row (redrive, replay) only counts the attempt.
UPDATE inbox
SET outcome = CASE WHEN state = 'done' THEN outcome ELSE %(outcome)s END,
    reason = CASE WHEN state = 'done' THEN reason ELSE %(reason)s END,
    state = 'done',
    attempts = attempts + 1,
    processed_at = coalesce(processed_at, now()),
    updated_at = now()
WHERE id = %(id)s
RETURNING outcome

-- name: inbox_mark_failed
-- A permanent error: never overrides a row that was already processed.
UPDATE inbox SET state = 'failed', reason = %(reason)s, attempts = attempts + 1, processed_at = now(), updated_at = now()
WHERE id = %(id)s AND state <> 'done'

-- name: inbox_mark_dead
-- Retries ran out (dramatiq's on_retry_exhausted). Never overrides a finished row.
UPDATE inbox SET state = 'dead', reason = %(reason)s, processed_at = now(), updated_at = now()
WHERE id = %(id)s AND state NOT IN ('done', 'failed')

-- name: inbox_due_for_redrive
-- Rows not finished whose last hand-over to the queue is older than the cutoff, oldest first.
-- SKIP LOCKED: two redrives at once (two clocks) never queue the same row twice.
SELECT id FROM inbox
WHERE state IN ('received', 'queued') AND coalesce(queued_at, received_at) < %(cutoff)s
ORDER BY coalesce(queued_at, received_at)
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: inbox_mark_redriven
UPDATE inbox SET state = 'queued', queued_at = %(now)s, redrives = redrives + 1, updated_at = %(now)s
WHERE id = ANY(%(ids)s) AND state IN ('received', 'queued')

-- name: inbox_list
SELECT id, state, outcome, reason, family, mch_id, pay_order_id, remote_addr, received_at, processed_at, attempts,
       redrives, pan_masked
FROM inbox
WHERE %(state)s::text IS NULL OR state = %(state)s::text
ORDER BY id
LIMIT %(limit)s

-- name: inbox_ids_in_state
SELECT id FROM inbox WHERE state = %(state)s ORDER BY id

-- name: inbox_backlog
-- For the metrics: rows per state not done, and the age of their oldest row (done rows are not counted:
-- the table only grows, and a scrape must stay cheap).
SELECT state, count(*) AS rows, extract(epoch FROM (now() - min(received_at)))::float8 AS oldest_age_seconds
FROM inbox WHERE state IN ('received', 'queued', 'failed', 'dead')
GROUP BY state

-- name: inbox_ping
-- Readiness: the database answers and the inbox table is there.
SELECT 1 FROM inbox LIMIT 1
