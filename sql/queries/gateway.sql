-- Named queries of the gateway area: expected orders and the pending-order sweep.

-- name: expect_insert
INSERT INTO expected_orders (mch_id, mch_order_no, pay_order_id, amount, currency, channel, family, created_at,
                             next_query_at)
VALUES (%(mch_id)s, %(mch_order_no)s, %(pay_order_id)s, %(amount)s, %(currency)s, %(channel)s, %(family)s,
        %(created_at)s, %(next_query_at)s)
ON CONFLICT (mch_id, mch_order_no) DO NOTHING
RETURNING mch_id;

-- name: expect_get_for_update
SELECT mch_id, mch_order_no, pay_order_id, amount, currency, channel, family, created_at
FROM expected_orders WHERE mch_id = %(mch_id)s AND mch_order_no = %(mch_order_no)s
FOR UPDATE;

-- name: expect_set_pay_order_id
UPDATE expected_orders SET pay_order_id = %(pay_order_id)s
WHERE mch_id = %(mch_id)s AND mch_order_no = %(mch_order_no)s AND pay_order_id IS NULL;

-- name: sweep_try_lock
SELECT pg_try_advisory_lock(%(key)s) AS locked;

-- name: sweep_unlock
SELECT pg_advisory_unlock(%(key)s);

-- Expected orders the ledger already knows final (a notify posted them): no query needed.
-- name: sweep_settle_by_pay_order_id
UPDATE expected_orders e
SET resolved_at = %(now)s, next_query_at = NULL, last_status = o.status,
    resolution = CASE o.state WHEN 'posted' THEN 'paid' ELSE o.state END
FROM orders o
WHERE e.resolved_at IS NULL AND e.pay_order_id IS NOT NULL AND o.pay_order_id = e.pay_order_id
  AND o.pay_type = 'pay' AND o.state IN ('posted', 'failed', 'rejected')
  -- a failed order with a notify still unprocessed or failed in the inbox is not settled: keep asking
  AND (o.state <> 'failed' OR NOT EXISTS (SELECT 1 FROM inbox i WHERE i.pay_order_id = o.pay_order_id AND i.state <> 'done'))
RETURNING e.mch_id, e.mch_order_no, e.gave_up_at;

-- name: sweep_settle_by_mch_order_no
-- One gateway pay per merchant order number decides: posted before rejected before anything not
-- final before failed (so an order is never settled failed while another pay of its number posted).
UPDATE expected_orders e
SET resolved_at = %(now)s, next_query_at = NULL, last_status = o.status, pay_order_id = o.pay_order_id,
    resolution = CASE o.state WHEN 'posted' THEN 'paid' ELSE o.state END
FROM (SELECT DISTINCT ON (o.mch_id, o.mch_order_no) o.mch_id, o.mch_order_no, o.pay_order_id, o.status, o.state
      FROM orders o
      JOIN expected_orders w ON w.mch_id = o.mch_id AND w.mch_order_no = o.mch_order_no
                            AND w.resolved_at IS NULL AND w.pay_order_id IS NULL
      WHERE o.pay_type = 'pay'
      ORDER BY o.mch_id, o.mch_order_no,
               CASE o.state WHEN 'posted' THEN 0 WHEN 'rejected' THEN 1 WHEN 'failed' THEN 3 ELSE 2 END,
               o.first_seen_at, o.pay_order_id) o
WHERE e.resolved_at IS NULL AND e.pay_order_id IS NULL AND o.mch_id = e.mch_id AND o.mch_order_no = e.mch_order_no
  AND o.state IN ('posted', 'failed', 'rejected')
  -- a failed order with a notify still unprocessed or failed in the inbox is not settled: keep asking
  AND (o.state <> 'failed' OR NOT EXISTS (SELECT 1 FROM inbox i WHERE i.pay_order_id = o.pay_order_id AND i.state <> 'done'))
RETURNING e.mch_id, e.mch_order_no, e.gave_up_at;

-- name: sweep_order_states
-- After a batch of answers was posted: where each order stands, whether a notify for it is still
-- unprocessed or failed in the inbox, and how many refunds still wait parked on it.
SELECT o.pay_order_id, o.state, o.pay_type,
       EXISTS (SELECT 1 FROM inbox i WHERE i.pay_order_id = o.pay_order_id AND i.state <> 'done') AS inbox_open,
       (SELECT count(*) FROM orders r WHERE r.original_order_id = o.pay_order_id AND r.state = 'parked') AS parked
FROM orders o WHERE o.pay_order_id = ANY(%(pay_order_ids)s::text[]);

-- name: sweep_due_expected
SELECT mch_id, mch_order_no, pay_order_id, amount, currency, channel, family, created_at, query_count
FROM expected_orders
WHERE next_query_at <= %(now)s
ORDER BY next_query_at
LIMIT %(limit)s;

-- name: sweep_record_expected
-- A batch of answers (one array element per expected order), recorded in one statement.
UPDATE expected_orders e
SET query_count = e.query_count + 1, last_queried_at = %(now)s, last_status = r.last_status,
    last_error = r.last_error, pay_order_id = coalesce(e.pay_order_id, r.pay_order_id),
    next_query_at = r.next_query_at, resolved_at = r.resolved_at, resolution = r.resolution,
    gave_up_at = r.gave_up_at
FROM unnest(%(mch_id)s::text[], %(mch_order_no)s::text[], %(last_status)s::integer[], %(last_error)s::text[],
            %(pay_order_id)s::text[], %(next_query_at)s::timestamptz[], %(resolved_at)s::timestamptz[],
            %(resolution)s::text[], %(gave_up_at)s::timestamptz[])
     AS r(mch_id, mch_order_no, last_status, last_error, pay_order_id, next_query_at, resolved_at, resolution,
          gave_up_at)
WHERE e.mch_id = r.mch_id AND e.mch_order_no = r.mch_order_no AND e.resolved_at IS NULL AND e.gave_up_at IS NULL;

-- Parked refunds whose original nobody is asking about yet.
-- name: sweep_parked_unqueried
SELECT r.original_order_id, min(r.mch_id) AS mch_id, min(r.first_seen_at) AS first_parked_at,
       bool_or(r.fields ? 'channelId') AS v1_fields, min(r.channel) AS channel,
       (SELECT e.family FROM expected_orders e WHERE e.pay_order_id = r.original_order_id LIMIT 1) AS expected_family
FROM orders r
WHERE r.state = 'parked' AND r.original_order_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM parked_queries p WHERE p.original_order_id = r.original_order_id)
GROUP BY r.original_order_id;

-- name: sweep_parked_insert
INSERT INTO parked_queries (original_order_id, mch_id, family, first_parked_at, next_query_at)
VALUES (%(original_order_id)s, %(mch_id)s, %(family)s, %(first_parked_at)s, %(next_query_at)s)
ON CONFLICT (original_order_id) DO NOTHING;

-- Originals that no refund waits on any more (posted by a notify, or by a query): done.
-- name: sweep_parked_settle
UPDATE parked_queries p SET resolved_at = %(now)s, next_query_at = NULL
WHERE p.resolved_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM orders r WHERE r.original_order_id = p.original_order_id AND r.state = 'parked')
RETURNING p.original_order_id;

-- name: sweep_due_parked
SELECT original_order_id, mch_id, family, first_parked_at, query_count
FROM parked_queries
WHERE next_query_at <= %(now)s
ORDER BY next_query_at
LIMIT %(limit)s;

-- name: sweep_record_parked
-- A batch of answers (one array element per parked original), recorded in one statement.
UPDATE parked_queries p
SET query_count = p.query_count + 1, last_queried_at = %(now)s, last_status = r.last_status,
    last_error = r.last_error, next_query_at = r.next_query_at, resolved_at = r.resolved_at,
    gave_up_at = r.gave_up_at
FROM unnest(%(original_order_id)s::text[], %(last_status)s::integer[], %(last_error)s::text[],
            %(next_query_at)s::timestamptz[], %(resolved_at)s::timestamptz[], %(gave_up_at)s::timestamptz[])
     AS r(original_order_id, last_status, last_error, next_query_at, resolved_at, gave_up_at)
WHERE p.original_order_id = r.original_order_id AND p.resolved_at IS NULL AND p.gave_up_at IS NULL;

-- name: sweep_next_due
SELECT min(t) AS next_due FROM (
    SELECT min(next_query_at) AS t FROM expected_orders WHERE next_query_at IS NOT NULL
    UNION ALL
    SELECT min(next_query_at) FROM parked_queries WHERE next_query_at IS NOT NULL
) s;

-- name: sweep_run_start
INSERT INTO sweep_runs (swept_at, concurrency) VALUES (%(now)s, %(concurrency)s) RETURNING id;

-- name: sweep_run_finish
UPDATE sweep_runs SET finished_at = clock_timestamp(), counts = %(counts)s WHERE id = %(id)s;

-- name: expect_refund_insert
INSERT INTO expected_refunds (mch_id, mch_refund_no, original_order_id, amount, currency, requested_at)
VALUES (%(mch_id)s, %(mch_refund_no)s, %(original_order_id)s, %(amount)s, %(currency)s, %(requested_at)s)
ON CONFLICT (mch_id, mch_refund_no) DO NOTHING
RETURNING mch_id;

-- name: expect_refund_get
SELECT mch_id, mch_refund_no, original_order_id, amount, currency::text AS currency, requested_at
FROM expected_refunds WHERE mch_id = %(mch_id)s AND mch_refund_no = %(mch_refund_no)s;
