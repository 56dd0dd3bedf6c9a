-- Reports: reconciliation, alerts, settlement export, clock jobs.
-- A business day is the half-open window [%(start)s, %(end)s) computed in Python from the
-- settlement zone (worker/reports/businessday.py); %(tz)s is that zone's IANA name.
-- An order's business instant is when the gateway says it happened (paySuccTime), else when we first heard of it.

-- ---------------------------------------------------------------- reconciliation

-- name: reconcile_start_run
INSERT INTO reconcile_runs (business_date, settlement_tz, window_start, window_end)
VALUES (%(day)s, %(tz)s, %(start)s, %(end)s)
RETURNING id;

-- name: reconcile_gateway_vs_ledger
-- What the gateway said (orders, the notify inbox) against the ledger (entries, exceptions).
-- One statement, one snapshot; DISTINCT ON keeps one row per (class, subject).
WITH day_orders AS (
    SELECT o.*
    FROM orders o
    WHERE coalesce(o.pay_succ_time, o.first_seen_at) >= %(start)s
      AND coalesce(o.pay_succ_time, o.first_seen_at) < %(end)s
),
day_exceptions AS (
    -- an exception belongs to its order's business day, and also to the day it was recorded
    -- (so one recorded after its day was reconciled is reported the next night)
    SELECT DISTINCT ON (x.pay_order_id, x.kind) x.*
    FROM ledger_exceptions x
    LEFT JOIN orders o ON o.pay_order_id = x.pay_order_id
    WHERE x.created_at >= %(start)s AND x.created_at < %(end)s
       OR coalesce(o.pay_succ_time, o.first_seen_at) >= %(start)s
          AND coalesce(o.pay_succ_time, o.first_seen_at) < %(end)s
    ORDER BY x.pay_order_id, x.kind, x.created_at DESC, x.id DESC
),
found AS (
    -- the gateway said success, the ledger has no entry (and no other class explains it)
    SELECT 'paid_not_in_ledger' AS class, o.pay_order_id AS subject, o.mch_id, o.pay_order_id, o.mch_order_no,
           o.currency::text AS currency, NULL::bigint AS expected_amount, o.amount AS gateway_amount,
           NULL::bigint AS ledger_amount,
           jsonb_build_object('state', o.state, 'status', o.status, 'reason', o.reason, 'payType', o.pay_type) AS details
    FROM day_orders o
    WHERE o.status IN (2, 3) AND o.state NOT IN ('parked', 'rejected')
      AND NOT EXISTS (SELECT 1 FROM journal_entries je WHERE je.pay_order_id = o.pay_order_id AND je.kind <> 'reversal')
    UNION ALL
    -- a notify we acknowledged (IOTPay notifies successes) still waiting to be processed, its order unknown
    (SELECT DISTINCT ON (i.pay_order_id)
           'paid_not_in_ledger', i.pay_order_id, i.mch_id, i.pay_order_id, NULL,
           NULL, NULL, NULL, NULL,
           jsonb_build_object('inbox_id', i.id, 'inbox_state', i.state, 'reason', i.reason)
    FROM inbox i
    WHERE i.received_at >= %(start)s AND i.received_at < %(end)s
      AND i.state IN ('received', 'queued') AND i.pay_order_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.pay_order_id = i.pay_order_id)
      AND NOT EXISTS (SELECT 1 FROM inbox d WHERE d.pay_order_id = i.pay_order_id AND d.state = 'done')
     ORDER BY i.pay_order_id, i.id)
    UNION ALL
    -- a notify we acknowledged that failed or died in processing, its order not posted: every such
    -- row is listed with its reason (received that day, or failed that day)
    SELECT 'notify_not_posted', 'inbox/' || i.id, i.mch_id, i.pay_order_id, o.mch_order_no,
           coalesce(o.currency::text, inbox_fact(i.body, 'currency')),
           NULL, coalesce(o.amount, CASE WHEN inbox_fact(i.body, 'amount') ~ '^[0-9]{1,15}$'
                                         THEN inbox_fact(i.body, 'amount')::bigint END), NULL,
           jsonb_build_object('inbox_id', i.id, 'inbox_state', i.state, 'reason', i.reason,
                              'received_at', i.received_at, 'order_state', o.state)
    FROM inbox i
    LEFT JOIN orders o ON o.pay_order_id = i.pay_order_id
    WHERE i.state IN ('failed', 'dead')
      AND (i.received_at >= %(start)s AND i.received_at < %(end)s
           OR i.updated_at >= %(start)s AND i.updated_at < %(end)s)
      AND o.state IS DISTINCT FROM 'posted'
    UNION ALL
    SELECT 'parked_without_original', o.pay_order_id, o.mch_id, o.pay_order_id, o.mch_order_no, o.currency::text,
           NULL, o.amount, NULL,
           jsonb_build_object('original_order_id', o.original_order_id, 'reason', o.reason)
    FROM day_orders o
    WHERE o.state = 'parked'
    UNION ALL
    SELECT 'stuck_pending', o.pay_order_id, o.mch_id, o.pay_order_id, o.mch_order_no, o.currency::text,
           NULL, o.amount, NULL,
           jsonb_build_object('state', o.state, 'status', o.status, 'first_seen_at', o.first_seen_at)
    FROM day_orders o
    WHERE o.state IN ('pending', 'unknown')
    UNION ALL
    SELECT 'duplicate_merchant_order', g.mch_id || '/' || g.mch_order_no, g.mch_id, NULL, g.mch_order_no, g.currency,
           NULL, g.total, NULL,
           jsonb_build_object('pay_order_ids', g.ids, 'states', g.states)
    FROM (
        SELECT o.mch_id, o.mch_order_no, sum(o.amount) AS total, min(o.currency::text) AS currency,
               jsonb_agg(o.pay_order_id ORDER BY o.pay_order_id) AS ids,
               jsonb_agg(o.state ORDER BY o.pay_order_id) AS states
        FROM orders o
        JOIN (SELECT DISTINCT mch_id, mch_order_no FROM day_orders
              WHERE pay_type = 'pay' AND mch_order_no IS NOT NULL) k USING (mch_id, mch_order_no)
        WHERE o.pay_type = 'pay' AND o.state <> 'failed'
        GROUP BY o.mch_id, o.mch_order_no
        HAVING count(*) > 1
    ) g
    UNION ALL
    -- what the ledger itself recorded as an exception that day
    SELECT CASE x.kind
               WHEN 'conflict' THEN 'conflict'
               WHEN 'over_refund' THEN 'refund_beyond_original'
               WHEN 'void_not_full' THEN 'refund_beyond_original'
               WHEN 'refundable_mismatch' THEN 'refundable_mismatch'
               WHEN 'currency_mismatch' THEN 'currency_mismatch'
               WHEN 'parked_too_long' THEN 'parked_without_original'
               WHEN 'unknown_status' THEN 'stuck_pending'
               WHEN 'status_regression' THEN 'status_regression'
               WHEN 'content_changed' THEN 'content_changed'
               ELSE 'ledger_exception'
           END,
           x.pay_order_id, o.mch_id, x.pay_order_id, o.mch_order_no, o.currency::text,
           NULL, o.amount, (SELECT je.amount FROM journal_entries je
                            WHERE je.pay_order_id = x.pay_order_id AND je.kind <> 'reversal'),
           jsonb_build_object('exception', x.kind, 'reason', x.reason) || x.details
    FROM day_exceptions x
    LEFT JOIN orders o ON o.pay_order_id = x.pay_order_id
)
INSERT INTO reconcile_mismatches (run_id, class, subject, mch_id, pay_order_id, mch_order_no, currency,
                                  expected_amount, gateway_amount, ledger_amount, details)
SELECT DISTINCT ON (class, subject) %(run_id)s, class, subject, mch_id, pay_order_id, mch_order_no, currency,
       expected_amount, gateway_amount, ledger_amount, details
FROM found
ORDER BY class, subject
ON CONFLICT (run_id, class, subject) DO NOTHING;

-- name: reconcile_expected_vs_gateway
-- The merchant's expected orders (sql/003_gateway.sql) against the gateway and the ledger.
-- An expected order matches a gateway pay by payOrderId when the checkout knew it, else by
-- (mchId, mchOrderNo).
WITH day_expected AS (
    SELECT e.*
    FROM expected_orders e
    WHERE e.created_at >= %(start)s AND e.created_at < %(end)s
),
matched AS (
    -- two equi-joins, not one join on an OR: each can use its index
    SELECT e.mch_id, e.mch_order_no, e.amount AS expected_amount, e.currency::text AS expected_currency,
           o.pay_order_id, o.amount AS gateway_amount, o.currency::text AS gateway_currency, o.state
    FROM day_expected e
    JOIN orders o ON o.pay_order_id = e.pay_order_id AND o.pay_type = 'pay' AND o.mch_id = e.mch_id
    UNION ALL
    SELECT e.mch_id, e.mch_order_no, e.amount, e.currency::text, o.pay_order_id, o.amount, o.currency::text, o.state
    FROM day_expected e
    JOIN orders o ON o.mch_id = e.mch_id AND o.mch_order_no = e.mch_order_no AND o.pay_type = 'pay'
    WHERE e.pay_order_id IS NULL
),
found AS (
    SELECT 'expected_not_paid' AS class, e.mch_id || '/' || e.mch_order_no AS subject, e.mch_id,
           e.pay_order_id, e.mch_order_no, e.currency::text AS currency, e.amount AS expected_amount,
           NULL::bigint AS gateway_amount, NULL::bigint AS ledger_amount,
           jsonb_build_object('created_at', e.created_at, 'gave_up_at', e.gave_up_at, 'channel', e.channel) AS details
    FROM day_expected e
    WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.pay_order_id = e.pay_order_id AND o.pay_type = 'pay')
      -- a notify for it sits in the inbox: that is paid_not_in_ledger, not unpaid
      AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.pay_order_id = e.pay_order_id)
      AND NOT EXISTS (SELECT 1 FROM orders o
                      WHERE o.mch_id = e.mch_id AND o.mch_order_no = e.mch_order_no AND o.pay_type = 'pay')
    UNION ALL
    SELECT 'amount_mismatch', m.pay_order_id, m.mch_id, m.pay_order_id, m.mch_order_no, m.gateway_currency,
           m.expected_amount, m.gateway_amount,
           (SELECT je.amount FROM journal_entries je WHERE je.pay_order_id = m.pay_order_id AND je.kind = 'pay'),
           jsonb_build_object('state', m.state)
    FROM matched m
    WHERE m.expected_amount <> m.gateway_amount AND m.state <> 'failed'
    UNION ALL
    SELECT 'currency_mismatch', m.pay_order_id, m.mch_id, m.pay_order_id, m.mch_order_no, m.gateway_currency,
           m.expected_amount, m.gateway_amount, NULL,
           jsonb_build_object('expected_currency', m.expected_currency, 'gateway_currency', m.gateway_currency,
                              'state', m.state)
    FROM matched m
    WHERE m.expected_currency <> m.gateway_currency AND m.state <> 'failed'
    UNION ALL
    -- in the ledger, but the merchant's checkout never registered the order
    SELECT 'unknown_to_merchant', je.pay_order_id, je.mch_id, je.pay_order_id, o.mch_order_no, je.currency::text,
           NULL, o.amount, je.amount,
           jsonb_build_object('occurred_at', je.occurred_at, 'channel', o.channel)
    FROM journal_entries je
    JOIN orders o ON o.pay_order_id = je.pay_order_id
    WHERE je.kind = 'pay' AND je.occurred_at >= %(start)s AND je.occurred_at < %(end)s
      -- opt-in: only a merchant who records expected orders is compared against them
      AND EXISTS (SELECT 1 FROM expected_orders e WHERE e.mch_id = je.mch_id)
      AND NOT EXISTS (SELECT 1 FROM expected_orders e WHERE e.pay_order_id = je.pay_order_id)
      AND NOT EXISTS (SELECT 1 FROM expected_orders e WHERE e.mch_id = je.mch_id AND e.mch_order_no = o.mch_order_no)
    UNION ALL
    -- the insider-refund control, for a merchant who records the refunds it requests: a gateway
    -- refund or void whose mchOrderNo (its mchRefundNo) nobody requested
    SELECT 'refund_not_requested', je.pay_order_id, je.mch_id, je.pay_order_id, o.mch_order_no, je.currency::text,
           NULL, o.amount, je.amount,
           jsonb_build_object('original_order_id', je.original_order_id, 'kind', je.kind,
                              'occurred_at', je.occurred_at)
    FROM journal_entries je
    JOIN orders o ON o.pay_order_id = je.pay_order_id
    WHERE je.kind IN ('refund', 'void') AND je.occurred_at >= %(start)s AND je.occurred_at < %(end)s
      AND EXISTS (SELECT 1 FROM expected_refunds r WHERE r.mch_id = je.mch_id)
      AND NOT EXISTS (SELECT 1 FROM expected_refunds r WHERE r.mch_id = je.mch_id AND r.mch_refund_no = o.mch_order_no)
    UNION ALL
    -- a refund the merchant requested that day that the gateway never reported done
    SELECT 'requested_refund_missing', r.mch_id || '/' || r.mch_refund_no, r.mch_id, NULL, r.mch_refund_no,
           r.currency::text, r.amount, NULL, NULL,
           jsonb_build_object('original_order_id', r.original_order_id, 'requested_at', r.requested_at)
    FROM expected_refunds r
    WHERE r.requested_at >= %(start)s AND r.requested_at < %(end)s
      AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.mch_id = r.mch_id AND o.mch_order_no = r.mch_refund_no
                                              AND o.pay_type <> 'pay' AND o.state = 'posted')
)
INSERT INTO reconcile_mismatches (run_id, class, subject, mch_id, pay_order_id, mch_order_no, currency,
                                  expected_amount, gateway_amount, ledger_amount, details)
SELECT DISTINCT ON (class, subject) %(run_id)s, class, subject, mch_id, pay_order_id, mch_order_no, currency,
       expected_amount, gateway_amount, ledger_amount, details
FROM found
ORDER BY class, subject
ON CONFLICT (run_id, class, subject) DO NOTHING;

-- name: reconcile_finish_run
-- Counts per class and a fingerprint of the whole result: a re-run on the same data has the same one.
WITH m AS (SELECT * FROM reconcile_mismatches WHERE run_id = %(run_id)s),
c AS (SELECT coalesce(jsonb_object_agg(class, n), '{}') AS counts
      FROM (SELECT class, count(*) AS n FROM m GROUP BY class) g),
f AS (SELECT encode(sha256(convert_to(coalesce(string_agg(
              class || '|' || subject || '|' || coalesce(expected_amount::text, '') || '|'
              || coalesce(gateway_amount::text, '') || '|' || coalesce(ledger_amount::text, ''),
              E'\n' ORDER BY class, subject), ''), 'UTF8')), 'hex') AS fp FROM m)
UPDATE reconcile_runs r
SET finished_at = clock_timestamp(), mismatch_count = (SELECT count(*) FROM m), counts = c.counts, fingerprint = f.fp
FROM c, f
WHERE r.id = %(run_id)s
RETURNING r.id, r.mismatch_count, r.counts, r.fingerprint;

-- name: reconcile_skipped
-- Classes not compared for a merchant, and why: expected orders and expected refunds are opt-in.
SELECT DISTINCT 'unknown_to_merchant' AS class, je.mch_id,
       'merchant has never recorded an expected order (iotledger expect / the expect_order actor)' AS reason
FROM journal_entries je
WHERE je.kind = 'pay' AND je.occurred_at >= %(start)s AND je.occurred_at < %(end)s
  AND NOT EXISTS (SELECT 1 FROM expected_orders e WHERE e.mch_id = je.mch_id)
UNION ALL
SELECT DISTINCT 'refund_not_requested', je.mch_id,
       'merchant has never recorded a requested refund (iotledger expect-refund / the expect_refund actor)'
FROM journal_entries je
WHERE je.kind IN ('refund', 'void') AND je.occurred_at >= %(start)s AND je.occurred_at < %(end)s
  AND NOT EXISTS (SELECT 1 FROM expected_refunds r WHERE r.mch_id = je.mch_id)
ORDER BY 1, 2;

-- name: reconcile_day_facts
-- The day's totals per merchant and currency (entries dated that day) and how many expected
-- orders matched a posted pay of the same amount and currency.
SELECT
    (SELECT coalesce(jsonb_agg(t ORDER BY t.mch_id, t.currency), '[]') FROM (
        SELECT je.mch_id, je.currency::text AS currency, count(*) AS entries,
               coalesce(sum(je.amount) FILTER (WHERE je.kind = 'pay'), 0) AS paid_cents,
               coalesce(sum(je.amount) FILTER (WHERE je.kind IN ('refund', 'void')), 0) AS refunded_cents
        FROM journal_entries je
        WHERE je.occurred_at >= %(start)s AND je.occurred_at < %(end)s AND je.kind IN ('pay', 'refund', 'void')
        GROUP BY 1, 2) t) AS totals,
    (SELECT count(*) FROM expected_orders e
     WHERE e.created_at >= %(start)s AND e.created_at < %(end)s
       AND EXISTS (SELECT 1 FROM orders o
                   WHERE o.pay_type = 'pay' AND o.state = 'posted' AND o.mch_id = e.mch_id
                     AND o.amount = e.amount AND o.currency = e.currency
                     AND (o.pay_order_id = e.pay_order_id OR e.pay_order_id IS NULL AND o.mch_order_no = e.mch_order_no))
    ) AS matched,
    (SELECT count(*) FROM expected_orders e WHERE e.created_at >= %(start)s AND e.created_at < %(end)s) AS expected;

-- name: reconcile_mismatches_of_run
SELECT m.class, m.subject, m.mch_id, m.pay_order_id, m.mch_order_no, m.currency,
       m.expected_amount, m.gateway_amount, m.ledger_amount, m.details, c.description
FROM reconcile_mismatches m
JOIN mismatch_classes c USING (class)
WHERE m.run_id = %(run_id)s
ORDER BY m.class, m.subject;

-- ---------------------------------------------------------------- alerts

-- name: alerts_from_run
-- One alert per mismatch and per set of facts: the dedup key is the class, the subject and a hash
-- of the amounts and details (the order ids involved), so a re-run on the same data raises nothing
-- new, while a third charge on one merchant order or a second conflicting notify is a new alert.
-- Past %(per_class)s new alerts of one class in one run, the rest are recorded without a webhook
-- post and one summary alert per class says how many and how to list them. A status_regression
-- already alerted at once by the minute job is not alerted again.
WITH fresh AS (
    SELECT m.*, r.business_date, c.description,
           'mismatch:' || m.class || ':' || m.subject || ':'
             || left(md5(concat_ws('|', m.currency, m.expected_amount, m.gateway_amount, m.ledger_amount,
                                   m.details::text)), 12) AS key
    FROM reconcile_mismatches m
    JOIN reconcile_runs r ON r.id = m.run_id
    JOIN mismatch_classes c ON c.class = m.class
    WHERE m.run_id = %(run_id)s
      AND NOT (m.class = 'status_regression'
               AND EXISTS (SELECT 1 FROM alerts a WHERE a.kind = 'status_regression'
                             AND a.details ->> 'pay_order_id' = m.pay_order_id
                             AND a.details ->> 'received_status' = m.details ->> 'received_status'))
),
new AS (
    SELECT f.*, row_number() OVER (PARTITION BY f.class ORDER BY f.subject) AS rn
    FROM fresh f WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.dedup_key = f.key)
),
one_by_one AS (
    INSERT INTO alerts (dedup_key, kind, text, details, webhook_state)
    SELECT n.key, CASE WHEN n.rn <= %(per_class)s THEN 'mismatch' ELSE 'mismatch_bulk' END,
           format('[%%s] %%s %%s (merchant %%s, %%s): %%s%%s', n.business_date, n.class, n.subject,
                  coalesce(n.mch_id, '?'),
                  coalesce(n.currency || ' ' || (coalesce(n.gateway_amount, n.ledger_amount, n.expected_amount)::numeric
                                                   / 100)::numeric(30, 2), 'amount unknown'),
                  n.description, coalesce(' (' || (n.details ->> 'reason') || ')', '')),
           jsonb_build_object('business_date', n.business_date, 'class', n.class, 'subject', n.subject,
                              'mch_id', n.mch_id, 'pay_order_id', n.pay_order_id, 'mch_order_no', n.mch_order_no,
                              'currency', n.currency, 'expected_amount', n.expected_amount,
                              'gateway_amount', n.gateway_amount, 'ledger_amount', n.ledger_amount) || n.details,
           CASE WHEN n.rn <= %(per_class)s THEN %(webhook_state)s ELSE 'none' END
    FROM new n
    ORDER BY n.class, n.subject
    ON CONFLICT (dedup_key) DO NOTHING
    RETURNING id, dedup_key, kind, text, details
),
many AS (
    INSERT INTO alerts (dedup_key, kind, text, details, webhook_state)
    SELECT 'mismatch_many:' || n.business_date || ':' || n.class || ':' || left(md5(string_agg(n.key, ',' ORDER BY n.key)), 12),
           'mismatch_summary',
           format('[%%s] %%s more %%s mismatch(es) beyond the first %%s of this run were recorded without one alert '
                  'each (merchants %%s); list them: iotledger reconcile --date %%s --json',
                  n.business_date, count(*), n.class, %(per_class)s,
                  string_agg(DISTINCT coalesce(n.mch_id, '?'), ', '), n.business_date),
           jsonb_build_object('business_date', n.business_date, 'class', n.class, 'count', count(*),
                              'subjects', jsonb_agg(n.subject ORDER BY n.subject)),
           %(webhook_state)s
    FROM new n
    WHERE n.rn > %(per_class)s
    GROUP BY n.business_date, n.class
    ON CONFLICT (dedup_key) DO NOTHING
    RETURNING id, dedup_key, kind, text, details
)
SELECT * FROM one_by_one WHERE kind = 'mismatch'
UNION ALL
SELECT * FROM many
ORDER BY id;

-- name: alerts_from_give_ups
-- Expected orders the sweep gave up on (still not final at the end of its schedule).
INSERT INTO alerts (dedup_key, kind, text, details, webhook_state)
SELECT 'give_up:' || e.mch_id || '/' || e.mch_order_no, 'sweep_give_up',
       format('sweep gave up on %%s/%%s (%%s %%s cents, payOrderId %%s): still not final at the gateway',
              e.mch_id, e.mch_order_no, e.currency, e.amount, coalesce(e.pay_order_id, 'unknown')),
       jsonb_build_object('mch_id', e.mch_id, 'mch_order_no', e.mch_order_no, 'pay_order_id', e.pay_order_id,
                          'amount', e.amount, 'currency', e.currency, 'gave_up_at', e.gave_up_at),
       %(webhook_state)s
FROM expected_orders e
WHERE e.gave_up_at IS NOT NULL
ORDER BY e.gave_up_at, e.mch_id, e.mch_order_no
ON CONFLICT (dedup_key) DO NOTHING
RETURNING id, dedup_key, kind, text, details;

-- name: alerts_from_parked_give_ups
-- Parked refunds whose original pay the sweep could not find before giving up.
INSERT INTO alerts (dedup_key, kind, text, details, webhook_state)
SELECT 'give_up_parked:' || p.original_order_id, 'sweep_give_up',
       format('sweep gave up on pay %%s of merchant %%s: refund(s) parked since %%s still have no original',
              p.original_order_id, p.mch_id, p.first_parked_at),
       jsonb_build_object('mch_id', p.mch_id, 'original_order_id', p.original_order_id,
                          'first_parked_at', p.first_parked_at, 'gave_up_at', p.gave_up_at),
       %(webhook_state)s
FROM parked_queries p
WHERE p.gave_up_at IS NOT NULL
ORDER BY p.gave_up_at, p.original_order_id
ON CONFLICT (dedup_key) DO NOTHING
RETURNING id, dedup_key, kind, text, details;

-- name: alerts_from_ledger_exceptions
-- Exceptions a person must see at once, not the next night: the gateway reports failed an order
-- the ledger posted (or refused). One alert per exception row (its own dedup key); the nightly
-- reconcile does not alert it again. Other regressions (a reordered pending notify) are alerted by
-- the nightly reconcile only.
INSERT INTO alerts (dedup_key, kind, text, details, webhook_state)
SELECT 'exception:' || x.dedup_key, x.kind,
       format('%%s on %%s (merchant %%s, %%s %%s, %%s): %%s', x.kind, x.pay_order_id, coalesce(o.mch_id, '?'),
              coalesce(o.currency::text, '?'), coalesce(((o.amount::numeric) / 100)::numeric(30, 2)::text, '?'),
              coalesce(o.pay_type, '?'), x.reason),
       jsonb_build_object('pay_order_id', x.pay_order_id, 'mch_id', o.mch_id, 'amount', o.amount,
                          'currency', o.currency, 'kind', x.kind) || x.details,
       %(webhook_state)s
FROM ledger_exceptions x
LEFT JOIN orders o ON o.pay_order_id = x.pay_order_id
WHERE x.kind = 'status_regression' AND x.created_at > now() - interval '1 day'
  AND x.details ->> 'state' IN ('posted', 'rejected') AND (x.details ->> 'received_status') IN ('4', '9')
ORDER BY x.id
ON CONFLICT (dedup_key) DO NOTHING
RETURNING id, dedup_key, kind, text, details;

-- name: alert_insert
INSERT INTO alerts (dedup_key, kind, text, details, webhook_state)
VALUES (%(dedup_key)s, %(kind)s, %(text)s, %(details)s, %(webhook_state)s)
ON CONFLICT (dedup_key) DO NOTHING
RETURNING id, dedup_key, kind, text, details;

-- name: alerts_claim_pending
-- Pending webhook deliveries; SKIP LOCKED so that two clocks never send the same alert at once.
SELECT id, dedup_key, kind, text, details, attempts
FROM alerts
WHERE webhook_state = 'pending'
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: alert_mark_sent
UPDATE alerts SET webhook_state = 'sent', sent_at = clock_timestamp(), attempts = attempts + %(attempts)s,
                  last_error = NULL
WHERE id = %(id)s;

-- name: alert_mark_failed
-- Still 'pending' while attempts remain (the next clock tick tries again), then 'failed'.
UPDATE alerts SET attempts = attempts + %(attempts)s, last_error = %(error)s,
                  webhook_state = CASE WHEN %(permanent)s OR attempts + %(attempts)s >= %(max_attempts)s
                                       THEN 'failed' ELSE 'pending' END
WHERE id = %(id)s;

-- name: summary_facts
-- What the daily summary says besides the day's totals (those come from export_summary): the day's last reconcile run.
SELECT (SELECT jsonb_build_object('run_id', id, 'mismatch_count', mismatch_count, 'counts', counts)
        FROM reconcile_runs WHERE business_date = %(day)s AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1) AS run;

-- ---------------------------------------------------------------- settlement export

-- name: export_lock
-- Exports of any day serialise: a day's assignment reads which days are closed (key: worker/db.py).
SELECT pg_advisory_xact_lock(%(key)s);

-- name: export_record
SELECT export_date, settlement_tz, version, manifest FROM settlement_exports WHERE export_date = %(day)s;

-- name: export_assign
-- Put in this day's file every entry not yet in any file (entries_awaiting_file) dated before the
-- day's end: the day's own entries, and (unless restating) any earlier one that arrived after its
-- day was closed or is older than the series (a backfill): the prior-day adjustments. A restate
-- takes only its own day's entries still awaiting a file.
WITH taken AS (
    DELETE FROM entries_awaiting_file a
    WHERE a.occurred_at < %(end)s AND (%(with_prior)s OR a.occurred_at >= %(start)s)
    RETURNING a.entry_id, a.occurred_at
)
INSERT INTO exported_entries (entry_id, export_date, business_date)
SELECT entry_id, %(day)s, (occurred_at AT TIME ZONE %(tz)s)::date FROM taken;

-- name: export_session_tz
SELECT set_config('TimeZone', %(tz)s, true);

-- name: export_rows
-- The day's file, in a fixed order (same ledger, same bytes): the day's own transactions by
-- time, then the prior-day adjustments by their business date and time. Local times use the
-- session zone set by export_session_tz.
SELECT to_char(%(day)s::date, 'YYYY-MM-DD') AS settlement_date,
       to_char(x.business_date, 'YYYY-MM-DD') AS business_date,
       CASE WHEN x.business_date < %(day)s THEN 'prior_day_adjustment' ELSE 'transaction' END AS record,
       to_char(je.occurred_at, 'YYYY-MM-DD"T"HH24:MI:SSTZH:TZM') AS local_time,
       to_char(je.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS utc_time,
       je.mch_id,
       o.channel,
       je.kind AS pay_type,
       je.pay_order_id,
       coalesce(je.original_order_id, rev.original_order_id) AS original_order_id,
       o.mch_order_no,
       je.currency::text AS currency,
       CASE WHEN je.kind = 'pay' OR je.kind = 'reversal' AND rev.kind IN ('refund', 'void') THEN 'in' ELSE 'out' END
           AS direction,
       je.amount AS amount_cents,
       CASE WHEN je.kind = 'pay' OR je.kind = 'reversal' AND rev.kind IN ('refund', 'void') THEN je.amount
            ELSE -je.amount END AS signed_amount_cents,
       o.fields ->> 'paySuccTime' AS pay_succ_time_raw,
       o.card_type,
       o.card_num,
       o.auth_num,
       o.trans_num,
       je.id AS entry_id
FROM exported_entries x
JOIN journal_entries je ON je.id = x.entry_id
LEFT JOIN journal_entries rev ON rev.id = je.reverses_entry_id
LEFT JOIN orders o ON o.pay_order_id = je.pay_order_id
WHERE x.export_date = %(day)s
ORDER BY x.business_date < %(day)s, x.business_date, je.occurred_at, je.id;

-- name: export_save
-- The latest version of a closed day (what `export` gives back); every version is also kept in settlement_files.
INSERT INTO settlement_exports (export_date, settlement_tz, version, manifest)
VALUES (%(day)s, %(tz)s, %(version)s, %(manifest)s)
ON CONFLICT (export_date) DO UPDATE
SET version = EXCLUDED.version, manifest = EXCLUDED.manifest, restated_at = clock_timestamp();

-- name: export_file_version
INSERT INTO settlement_files (export_date, version, status, manifest_name, manifest_sha256, manifest)
VALUES (%(day)s, %(version)s, %(status)s, %(manifest_name)s, %(manifest_sha256)s, %(manifest)s);

-- name: export_previous_manifest
-- The newest version of the closest earlier closed day: the link of the chain.
SELECT export_date, version, manifest_name, manifest_sha256 FROM settlement_files
WHERE export_date < %(day)s ORDER BY export_date DESC, version DESC LIMIT 1;

-- name: export_summary
-- Per merchant, currency and section (the day's own transactions, the prior-day adjustments):
-- count, money in, money out, of the entries in one day's file. Sums are numeric. This one query
-- feeds the summary CSV, the workbook's totals, the manifest and the daily summary alert.
SELECT je.mch_id, je.currency::text AS currency,
       CASE WHEN x.business_date < %(day)s THEN 'prior_day_adjustments' ELSE 'business_day' END AS section,
       count(*) AS count,
       coalesce(sum(je.amount) FILTER (WHERE je.kind = 'pay' OR je.kind = 'reversal' AND rev.kind IN ('refund', 'void')),
                0) AS gross_cents,
       coalesce(sum(je.amount) FILTER (WHERE NOT (je.kind = 'pay' OR je.kind = 'reversal'
                                                  AND rev.kind IN ('refund', 'void'))), 0) AS refunds_cents
FROM exported_entries x
JOIN journal_entries je ON je.id = x.entry_id
LEFT JOIN journal_entries rev ON rev.id = je.reverses_entry_id
WHERE x.export_date = %(day)s
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;

-- name: export_ledger_totals
-- The ledger's own view of what a set of exported days holds, straight from the postings
-- (clearing account legs): what the CSV must add up to.
SELECT je.currency::text AS currency,
       count(DISTINCT je.id) AS entries,
       coalesce(sum(p.amount) FILTER (WHERE p.amount > 0), 0) AS clearing_debits,
       coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0), 0) AS clearing_credits
FROM exported_entries x
JOIN journal_entries je ON je.id = x.entry_id
JOIN postings p ON p.entry_id = je.id
JOIN accounts a ON a.id = p.account_id AND a.kind = 'clearing'
WHERE x.export_date = %(day)s
GROUP BY je.currency
ORDER BY je.currency;

-- ---------------------------------------------------------------- clock

-- name: job_claim
-- Claim one (job, slot). Of several clocks only one gets a row back; a failed run, or one whose
-- clock died (still 'running' long after it started), may be claimed again.
INSERT INTO job_runs (job, slot, clock_id, status)
VALUES (%(job)s, %(slot)s, %(clock_id)s, 'running')
ON CONFLICT (job, slot) DO UPDATE
SET clock_id = EXCLUDED.clock_id, status = 'running', attempts = job_runs.attempts + 1,
    started_at = clock_timestamp(), finished_at = NULL, error = NULL, result = NULL
WHERE job_runs.attempts < %(max_attempts)s
  AND (job_runs.status = 'failed'
       OR job_runs.status = 'running' AND job_runs.started_at < clock_timestamp() - %(stale)s::interval)
RETURNING attempts;

-- name: job_finish
UPDATE job_runs
SET status = %(status)s, finished_at = clock_timestamp(), result = %(result)s, error = %(error)s
WHERE job = %(job)s AND slot = %(slot)s AND clock_id = %(clock_id)s;

-- name: job_prune
-- Minute jobs leave a row a minute each; keep a week of them (nightly rows are kept).
DELETE FROM job_runs WHERE job IN ('sweep', 'redrive', 'alerts') AND started_at < %(before)s;

-- name: series_start
-- The first business day of the file series: the first day ever closed or tried, else the
-- business day of the earliest ledger entry (NULL: an empty ledger, nothing to close yet).
SELECT coalesce(least((SELECT min(export_date) FROM settlement_exports),
                      (SELECT min(slot::date) FROM job_runs WHERE job = 'nightly')),
                (SELECT (min(occurred_at) AT TIME ZONE %(tz)s)::date FROM journal_entries
                 WHERE kind IN ('pay', 'refund', 'void', 'reversal')));

-- name: nightly_done_between
SELECT slot::date FROM job_runs WHERE job = 'nightly' AND status = 'done' AND slot::date BETWEEN %(first)s AND %(last)s;

-- name: nightly_state
SELECT status, attempts, finished_at, error FROM job_runs WHERE job = 'nightly' AND slot = %(slot)s;

-- ---------------------------------------------------------------- files verify

-- name: files_versions
-- Every version of every closed day's files, as recorded when written.
SELECT export_date, version, status, manifest_name, manifest_sha256, manifest, created_at
FROM settlement_files ORDER BY export_date, version;

-- name: files_day_entries
-- What one day's file must hold: its entries as the ledger has them.
SELECT x.entry_id, je.pay_order_id, je.mch_id, je.currency::text AS currency,
       CASE WHEN je.kind = 'pay' OR je.kind = 'reversal' AND rev.kind IN ('refund', 'void') THEN je.amount
            ELSE -je.amount END AS signed_amount_cents
FROM exported_entries x
JOIN journal_entries je ON je.id = x.entry_id
LEFT JOIN journal_entries rev ON rev.id = je.reverses_entry_id
WHERE x.export_date = %(day)s;

-- name: files_unfiled
-- Entries dated before the end of the last closed day that are in no file yet. Those posted after
-- the newest file was written wait for the next one; the others were missed.
SELECT a.entry_id, je.pay_order_id, je.mch_id, je.currency::text AS currency, a.occurred_at, je.posted_at,
       je.posted_at > %(last_written)s AS awaiting_next
FROM entries_awaiting_file a JOIN journal_entries je ON je.id = a.entry_id
WHERE a.occurred_at < %(end)s
ORDER BY a.entry_id;

-- name: files_ledger_net
-- The ledger's net per merchant and currency (clearing postings) of the entries the files must hold
-- (the gateway's transactions: the books' fees, payouts and adjustments are in no settlement file).
SELECT je.mch_id, je.currency::text AS currency, count(DISTINCT je.id) AS entries, sum(p.amount) AS net_cents
FROM journal_entries je
JOIN postings p ON p.entry_id = je.id
JOIN accounts a ON a.id = p.account_id AND a.kind = 'clearing'
WHERE je.occurred_at < %(end)s AND je.kind IN ('pay', 'refund', 'void', 'reversal')
  AND NOT EXISTS (SELECT 1 FROM entries_awaiting_file w WHERE w.entry_id = je.id AND je.posted_at > %(last_written)s)
GROUP BY 1, 2 ORDER BY 1, 2;
