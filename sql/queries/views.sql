-- The finance read models (worker/reports/views.py): what the console's pages and the command
-- line's --json (`overview`, `days`, `day`, `order`) both show, from these queries only.
-- Every query reads a bounded, indexed slice: no page scans a whole table (bench_console).

-- ---------------------------------------------------------------- one day's close

-- name: views_close_status
-- How one business day's close went: the clock's nightly job, the latest version of its files,
-- its latest finished reconcile run.
SELECT
    (SELECT jsonb_build_object('status', j.status, 'attempts', j.attempts, 'started_at', j.started_at,
                               'finished_at', j.finished_at, 'error', j.error)
     FROM job_runs j WHERE j.job = 'nightly' AND j.slot = %(day)s::date::text) AS nightly,
    (SELECT jsonb_build_object('version', s.version, 'status', s.manifest ->> 'status', 'created_at', s.created_at,
                               'restated_at', s.restated_at, 'rows', s.manifest -> 'rows',
                               'totals', s.manifest -> 'totals')
     FROM settlement_exports s WHERE s.export_date = %(day)s) AS export,
    (SELECT jsonb_build_object('run_id', r.id, 'finished_at', r.finished_at, 'mismatch_count', r.mismatch_count,
                               'counts', r.counts)
     FROM reconcile_runs r WHERE r.business_date = %(day)s AND r.finished_at IS NOT NULL
     ORDER BY r.id DESC LIMIT 1) AS reconcile;

-- name: views_open_mismatches_by_class_age
-- The open reconcile mismatches: those of the latest finished run of each business day, by
-- class and by age (days since their business day, from %(today)s), with their amounts per
-- currency (the gateway's amount, else the expected, else the ledger's).
WITH latest AS (
    SELECT DISTINCT ON (r.business_date) r.id, r.business_date
    FROM reconcile_runs r WHERE r.finished_at IS NOT NULL
    ORDER BY r.business_date, r.id DESC
)
SELECT m.class,
       CASE WHEN %(today)s::date - l.business_date <= 1 THEN 0
            WHEN %(today)s::date - l.business_date <= 7 THEN 1
            WHEN %(today)s::date - l.business_date <= 30 THEN 2
            ELSE 3 END AS age_bucket,
       coalesce(m.currency, '') AS currency,
       count(*) AS count,
       coalesce(sum(coalesce(m.gateway_amount, m.expected_amount, m.ledger_amount)), 0) AS amount,
       min(l.business_date) AS oldest
FROM latest l JOIN reconcile_mismatches m ON m.run_id = l.id
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

-- name: views_last_verify
SELECT id, ran_at, source, ran_by, out_dir, ok, closed_days, first_day, last_day, files_checked, findings_count, report
FROM files_verify_runs ORDER BY id DESC LIMIT 1;

-- name: views_record_verify
INSERT INTO files_verify_runs (source, ran_by, out_dir, ok, closed_days, first_day, last_day, files_checked,
                               findings_count, report)
VALUES (%(source)s, %(ran_by)s, %(out_dir)s, %(ok)s, %(closed_days)s, %(first_day)s, %(last_day)s,
        %(files_checked)s, %(findings_count)s, %(report)s)
RETURNING id, ran_at;

-- ---------------------------------------------------------------- days

-- name: views_days
-- Closed days (files recorded) and days whose close was tried, newest first, before %(before)s
-- (keyset: the last date of the previous page), at most %(limit)s.
WITH days AS (
    (SELECT s.export_date AS day FROM settlement_exports s
     WHERE s.export_date < %(before)s ORDER BY s.export_date DESC LIMIT %(limit)s)
    UNION
    (SELECT j.slot::date FROM job_runs j
     WHERE j.job = 'nightly' AND j.slot < %(before)s::date::text ORDER BY j.slot DESC LIMIT %(limit)s)
)
SELECT d.day, s.version, s.created_at, s.restated_at, s.manifest -> 'rows' AS rows, s.manifest -> 'totals' AS totals,
       s.manifest ->> 'status' AS file_status, j.status AS close_status, j.error AS close_error,
       r.mismatch_count
FROM (SELECT day FROM days ORDER BY day DESC LIMIT %(limit)s) d
LEFT JOIN settlement_exports s ON s.export_date = d.day
LEFT JOIN job_runs j ON j.job = 'nightly' AND j.slot = d.day::text
LEFT JOIN LATERAL (SELECT rr.mismatch_count FROM reconcile_runs rr
                   WHERE rr.business_date = d.day AND rr.finished_at IS NOT NULL
                   ORDER BY rr.id DESC LIMIT 1) r ON true
ORDER BY d.day DESC;

-- name: views_day_versions
-- Every version of one day's files, as recorded when written.
SELECT version, status, manifest_name, manifest_sha256, manifest, created_at
FROM settlement_files WHERE export_date = %(day)s ORDER BY version;

-- ---------------------------------------------------------------- an order's evidence

-- name: views_find_orders
-- An id a person typed: a payOrderId, else a merchant order number (a refund's is its
-- mchRefundNo), optionally of one merchant; at most %(limit)s orders.
(SELECT o.pay_order_id, o.mch_id, o.mch_order_no, o.pay_type, o.original_order_id, o.amount, o.currency::text,
        o.state, coalesce(o.pay_succ_time, o.first_seen_at) AS at, 'pay_order_id' AS matched_by
 FROM orders o WHERE o.pay_order_id = %(text)s AND (%(mch_id)s::text IS NULL OR o.mch_id = %(mch_id)s))
UNION ALL
(SELECT o.pay_order_id, o.mch_id, o.mch_order_no, o.pay_type, o.original_order_id, o.amount, o.currency::text,
        o.state, coalesce(o.pay_succ_time, o.first_seen_at), 'mch_order_no'
 FROM orders o WHERE o.mch_order_no = %(text)s AND o.pay_order_id <> %(text)s
   AND (%(mch_id)s::text IS NULL OR o.mch_id = %(mch_id)s)
 ORDER BY o.mch_id, o.first_seen_at, o.pay_order_id LIMIT %(limit)s)
LIMIT %(limit)s;

-- name: views_find_expected
-- Expected orders the checkout recorded under this payOrderId or merchant order number that
-- match no order the gateway told us about (never paid, or not yet).
SELECT e.mch_id, e.mch_order_no, e.pay_order_id, e.amount, e.currency::text AS currency, e.channel, e.created_at,
       e.query_count, e.last_queried_at, e.last_status, e.last_error, e.resolution, e.resolved_at, e.gave_up_at
FROM expected_orders e
WHERE (e.mch_order_no = %(text)s OR e.pay_order_id = %(text)s)
  AND (%(mch_id)s::text IS NULL OR e.mch_id = %(mch_id)s)
  AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.pay_order_id = e.pay_order_id)
  AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.mch_id = e.mch_id AND o.mch_order_no = e.mch_order_no
                                            AND o.pay_type = 'pay')
ORDER BY e.mch_id, e.created_at LIMIT %(limit)s;

-- name: views_order_family
-- The order and its refunds and voids (a refund's own page shows its pay's family too).
SELECT o.pay_order_id, o.pay_type, o.original_order_id, o.mch_id, o.mch_order_no, o.amount, o.currency::text AS currency,
       o.status, o.state, o.reason, o.source, o.channel, o.card_num, o.pay_succ_time, o.first_seen_at, o.updated_at,
       o.posted_at
FROM orders o
WHERE o.pay_order_id = %(root)s OR o.original_order_id = %(root)s
ORDER BY coalesce(o.pay_succ_time, o.first_seen_at), o.pay_order_id
LIMIT 500;

-- name: views_order_notifies
-- Every notify acknowledged for these order ids, with its stored (masked) body.
SELECT i.id AS inbox_id, i.pay_order_id, i.mch_id, i.family, i.content_type, i.body, i.pan_masked, i.remote_addr,
       i.received_at, i.verified_at, i.state, i.outcome, i.reason, i.attempts, i.processed_at
FROM inbox i WHERE i.pay_order_id = ANY(%(ids)s::text[])
ORDER BY i.received_at, i.id
LIMIT 500;

-- name: views_order_entries
-- The journal entries of these order ids (and the reversals of any of them) with their legs and
-- the settlement file each is in. Found by the indexes the ledger keeps (one entry per order id,
-- a reversal by the entry it reverses): no index of its own on the journal.
WITH own AS (
    SELECT e.id FROM journal_entries e WHERE e.pay_order_id = ANY(%(ids)s::text[]) AND e.kind <> 'reversal'
), found AS (
    SELECT id FROM own
    UNION
    SELECT rv.id FROM journal_entries rv WHERE rv.reverses_entry_id IN (SELECT id FROM own)
)
SELECT e.id, e.kind, e.pay_order_id, e.original_order_id, e.mch_id, e.amount, e.currency::text AS currency,
       e.occurred_at, e.posted_at, e.reverses_entry_id, e.memo,
       (SELECT jsonb_agg(jsonb_build_object('account', a.kind, 'amount', p.amount) ORDER BY p.amount DESC, a.kind)
        FROM postings p JOIN accounts a ON a.id = p.account_id WHERE p.entry_id = e.id) AS legs,
       x.export_date, x.business_date,
       (SELECT f.manifest_name FROM settlement_files f WHERE f.export_date = x.export_date
        ORDER BY f.version DESC LIMIT 1) AS manifest_name,
       s.version AS file_version, s.created_at AS filed_at
FROM found JOIN journal_entries e ON e.id = found.id
LEFT JOIN exported_entries x ON x.entry_id = e.id
LEFT JOIN settlement_exports s ON s.export_date = x.export_date
ORDER BY e.posted_at, e.id
LIMIT 500;

-- name: views_order_exceptions
SELECT x.id, x.pay_order_id, x.kind, x.reason, x.details, x.created_at
FROM ledger_exceptions x WHERE x.pay_order_id = ANY(%(ids)s::text[])
ORDER BY x.created_at, x.id
LIMIT 500;

-- name: views_order_expected
-- What the checkout said to expect for this order (by payOrderId or merchant order number), and
-- the sweep's questions to the gateway about it.
SELECT e.mch_id, e.mch_order_no, e.pay_order_id, e.amount, e.currency::text AS currency, e.channel, e.family,
       e.created_at, e.recorded_at, e.query_count, e.last_queried_at, e.last_status, e.last_error, e.resolution,
       e.resolved_at, e.gave_up_at
FROM expected_orders e
WHERE e.pay_order_id = %(pay_order_id)s
   OR (e.mch_id = %(mch_id)s AND e.mch_order_no = %(mch_order_no)s)
LIMIT 10;

-- name: views_order_parked_queries
-- The sweep's questions about a pay that refunds were parked waiting for.
SELECT p.original_order_id, p.mch_id, p.first_parked_at, p.query_count, p.last_queried_at, p.last_status,
       p.last_error, p.resolved_at, p.gave_up_at
FROM parked_queries p WHERE p.original_order_id = %(root)s;

-- name: views_order_expected_refunds
SELECT r.mch_id, r.mch_refund_no, r.original_order_id, r.amount, r.currency::text AS currency, r.requested_at,
       r.recorded_at
FROM expected_refunds r WHERE r.original_order_id = %(root)s
ORDER BY r.requested_at LIMIT 100;

-- name: views_order_mismatches
-- The reconcile mismatches naming these orders, each with whether it is still open (found by
-- the latest finished run of its business day).
SELECT m.run_id, r.business_date, r.finished_at, m.class, c.description, m.subject, m.mch_id, m.pay_order_id,
       m.mch_order_no, m.currency, m.expected_amount, m.gateway_amount, m.ledger_amount, m.details,
       r.id = (SELECT max(r2.id) FROM reconcile_runs r2
               WHERE r2.business_date = r.business_date AND r2.finished_at IS NOT NULL) AS open
FROM reconcile_mismatches m
JOIN reconcile_runs r ON r.id = m.run_id
JOIN mismatch_classes c ON c.class = m.class
WHERE m.pay_order_id = ANY(%(ids)s::text[])
   OR (m.mch_id = %(mch_id)s AND m.mch_order_no = %(mch_order_no)s AND m.pay_order_id IS NULL)
ORDER BY r.business_date, m.run_id, m.class
LIMIT 500;

-- ---------------------------------------------------------------- day totals, kept (sql/023)

-- name: views_day_entry_counts
-- How many journal entries each day's window holds (an index-only count per day).
SELECT d.day, (SELECT count(*) FROM journal_entries j WHERE j.occurred_at >= d.starts AND j.occurred_at < d.ends)
       AS entries
FROM unnest(%(days)s::date[], %(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS d (day, starts, ends);

-- name: views_day_totals_kept
SELECT business_date, entries, totals FROM day_totals_cache
WHERE tz = %(tz)s AND business_date = ANY(%(days)s::date[]);

-- name: views_day_totals_keep
INSERT INTO day_totals_cache (tz, business_date, entries, totals)
SELECT %(tz)s, d.day, d.entries, d.totals
FROM unnest(%(days)s::date[], %(entries)s::bigint[], %(totals)s::jsonb[]) AS d (day, entries, totals)
ON CONFLICT (tz, business_date) DO UPDATE
SET entries = EXCLUDED.entries, totals = EXCLUDED.totals, computed_at = clock_timestamp();
