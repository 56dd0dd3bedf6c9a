-- Named queries of the ledger (worker/ledger/). Parameters are psycopg placeholders.

-- name: lock_order_tree
-- Serialises everything that touches one pay order and its refunds, across processes: a pay
-- locks its id twice (first = second); a refund locks its pay's id and its own, in sorted order.
-- The keys and the seed come from worker/db.py (order_lock_keys, ORDER_LOCK_SEED).
SELECT pg_advisory_xact_lock(hashtextextended(%(first)s, %(seed)s)),
       pg_advisory_xact_lock(hashtextextended(%(second)s, %(seed)s))

-- name: order_for_update
SELECT pay_order_id, mch_id, mch_order_no, pay_type, original_order_id, currency, amount, status, state,
       reason, fingerprint, pay_succ_time, first_seen_at
FROM orders WHERE pay_order_id = %(pay_order_id)s FOR UPDATE

-- name: insert_order
INSERT INTO orders (pay_order_id, mch_id, mch_order_no, pay_type, original_order_id, currency, amount, status,
                    state, reason, gateway_refundable, fingerprint, channel, card_type, card_num, auth_num,
                    trans_num, invoice_num, pay_succ_time, source, fields)
VALUES (%(pay_order_id)s, %(mch_id)s, %(mch_order_no)s, %(pay_type)s, %(original_order_id)s, %(currency)s,
        %(amount)s, %(status)s, %(state)s, %(reason)s, %(gateway_refundable)s, %(fingerprint)s, %(channel)s,
        %(card_type)s, %(card_num)s, %(auth_num)s, %(trans_num)s, %(invoice_num)s, %(pay_succ_time)s,
        %(source)s, %(fields)s)

-- name: refresh_order
-- New information about a known order (same content): its latest status and fields.
UPDATE orders SET status = %(status)s, gateway_refundable = coalesce(%(gateway_refundable)s, gateway_refundable),
       channel = coalesce(%(channel)s, channel), card_type = coalesce(%(card_type)s, card_type),
       card_num = coalesce(%(card_num)s, card_num), auth_num = coalesce(%(auth_num)s, auth_num),
       trans_num = coalesce(%(trans_num)s, trans_num), invoice_num = coalesce(%(invoice_num)s, invoice_num),
       pay_succ_time = coalesce(%(pay_succ_time)s, pay_succ_time), mch_order_no = coalesce(mch_order_no, %(mch_order_no)s),
       fields = %(fields)s, source = %(source)s, updated_at = now()
WHERE pay_order_id = %(pay_order_id)s

-- name: replace_order_content
-- The gateway changed the content of an order with nothing posted: its newer word replaces ours
-- (the old content is kept in a content_changed exception).
UPDATE orders SET mch_id = %(mch_id)s, mch_order_no = %(mch_order_no)s, pay_type = %(pay_type)s,
       original_order_id = %(original_order_id)s, currency = %(currency)s, amount = %(amount)s,
       fingerprint = %(fingerprint)s, updated_at = now()
WHERE pay_order_id = %(pay_order_id)s

-- name: order_was_success
-- A failed order the gateway once called a success (its move to failed was recorded as a regression).
SELECT 1 FROM ledger_exceptions
WHERE pay_order_id = %(pay_order_id)s AND kind = 'status_regression' AND (details ->> 'recorded_status')::int IN (2, 3)
LIMIT 1

-- name: set_order_state
UPDATE orders SET state = %(state)s, reason = %(reason)s, updated_at = now(),
       posted_at = CASE WHEN %(state)s = 'posted' THEN now() ELSE posted_at END
WHERE pay_order_id = %(pay_order_id)s

-- name: account_ids
-- settled: created before this transaction began, so committed (this transaction's own rows carry
-- its now()); only those may be remembered past a rollback
SELECT kind, id, created_at < now() AS settled FROM accounts WHERE mch_id = %(mch_id)s AND currency = %(currency)s

-- name: ensure_accounts
INSERT INTO accounts (mch_id, currency, kind)
SELECT %(mch_id)s, %(currency)s, k FROM unnest(%(kinds)s::text[]) AS k
ON CONFLICT (mch_id, currency, kind) DO NOTHING

-- name: insert_entry
-- One journal entry and its two legs in one statement: debit one account, credit the other;
-- the order is marked posted in the same statement.
WITH e AS (
    INSERT INTO journal_entries (pay_order_id, kind, original_order_id, mch_id, currency, amount, occurred_at, memo)
    VALUES (%(pay_order_id)s, %(kind)s, %(original_order_id)s, %(mch_id)s, %(currency)s, %(amount)s,
            %(occurred_at)s, %(memo)s)
    RETURNING id, mch_id, currency, amount
), posted AS (
    UPDATE orders SET state = 'posted', reason = NULL, updated_at = now(), posted_at = now()
    WHERE pay_order_id = %(pay_order_id)s
)
INSERT INTO postings (entry_id, account_id, mch_id, currency, amount)
SELECT e.id, a.id, e.mch_id, e.currency, CASE WHEN a.kind = %(debit)s THEN e.amount ELSE -e.amount END
FROM e JOIN accounts a ON a.mch_id = e.mch_id AND a.currency = e.currency AND a.kind IN (%(debit)s, %(credit)s)
RETURNING entry_id

-- name: pay_balance_for_update
SELECT pay_order_id, mch_id, currency, amount, refunded, refundable
FROM pay_balances WHERE pay_order_id = %(pay_order_id)s FOR UPDATE

-- name: parked_refunds_of
SELECT pay_order_id FROM orders
WHERE original_order_id = %(pay_order_id)s AND state = 'parked'
ORDER BY coalesce(pay_succ_time, first_seen_at), first_seen_at, pay_order_id

-- name: record_exception
INSERT INTO ledger_exceptions (pay_order_id, kind, reason, details, dedup_key)
VALUES (%(pay_order_id)s, %(kind)s, %(reason)s, %(details)s, %(dedup_key)s)
ON CONFLICT (dedup_key) DO NOTHING

-- name: order_view
SELECT o.pay_order_id, o.mch_id, o.mch_order_no, o.pay_type, o.original_order_id, o.currency, o.amount, o.status,
       o.state, o.reason, o.gateway_refundable, o.channel, o.card_type, o.card_num, o.auth_num, o.trans_num,
       o.invoice_num, o.pay_succ_time, o.source, o.first_seen_at, o.updated_at, o.posted_at,
       b.refunded, b.refundable
FROM orders o LEFT JOIN pay_balances b ON b.pay_order_id = o.pay_order_id
WHERE o.pay_order_id = %(pay_order_id)s

-- name: order_refunds
SELECT pay_order_id, pay_type, amount, currency, status, state, reason, pay_succ_time
FROM orders WHERE original_order_id = %(pay_order_id)s
ORDER BY coalesce(pay_succ_time, first_seen_at), pay_order_id

-- name: order_entries
SELECT e.id, e.kind, e.pay_order_id, e.original_order_id, e.amount, e.currency, e.occurred_at, e.posted_at,
       a.kind AS account, p.amount AS leg
FROM journal_entries e JOIN postings p ON p.entry_id = e.id JOIN accounts a ON a.id = p.account_id
-- by the index of one entry per order id; a reversal carries the id of the order it reverses
-- (reversal_mirrors), so it is found by the entry it reverses: no scan of the journal
WHERE e.id IN (SELECT o.id FROM journal_entries o WHERE o.pay_order_id = %(pay_order_id)s AND o.kind <> 'reversal'
               UNION ALL
               SELECT r.id FROM journal_entries o JOIN journal_entries r ON r.reverses_entry_id = o.id
               WHERE o.pay_order_id = %(pay_order_id)s AND o.kind <> 'reversal')
ORDER BY e.id, p.amount DESC, a.kind

-- name: order_inbox_rows
-- The notifies acknowledged for this order id, as the inbox keeps them (bodies are not shown).
SELECT id AS inbox_id, state, outcome, reason, family, received_at, processed_at
FROM inbox WHERE pay_order_id = %(pay_order_id)s ORDER BY id

-- name: order_exceptions
SELECT kind, reason, details, created_at FROM ledger_exceptions
WHERE pay_order_id = %(pay_order_id)s ORDER BY id

-- name: check_unbalanced_entries
SELECT e.id, e.pay_order_id, count(p.id) AS legs, coalesce(sum(p.amount), 0) AS total
FROM journal_entries e LEFT JOIN postings p ON p.entry_id = e.id
GROUP BY e.id, e.pay_order_id
HAVING count(p.id) < 2 OR coalesce(sum(p.amount), 0) <> 0
ORDER BY e.id LIMIT 100

-- name: check_currency_totals
SELECT currency, sum(amount) AS total FROM postings GROUP BY currency ORDER BY currency

-- name: check_refundable
-- Every posted pay: refundable = amount - (refunds + voids not reversed) as the journal says; a reversed
-- pay has nothing left to refund.
WITH reversed AS (SELECT reverses_entry_id AS id FROM journal_entries WHERE kind = 'reversal'),
drawn AS (
    SELECT r.original_order_id AS pay_order_id, sum(r.amount) AS drawn
    FROM journal_entries r WHERE r.kind IN ('refund', 'void') AND r.id NOT IN (SELECT id FROM reversed)
    GROUP BY r.original_order_id
)
SELECT b.pay_order_id, b.amount, b.refunded, b.refundable,
       CASE WHEN b.entry_id IN (SELECT id FROM reversed) THEN b.amount ELSE coalesce(d.drawn, 0) END AS journal_refunded
FROM pay_balances b LEFT JOIN drawn d USING (pay_order_id)
WHERE b.refunded <> CASE WHEN b.entry_id IN (SELECT id FROM reversed) THEN b.amount ELSE coalesce(d.drawn, 0) END
ORDER BY b.pay_order_id LIMIT 100

-- name: check_orphan_refunds
SELECT r.pay_order_id, r.original_order_id FROM journal_entries r
LEFT JOIN pay_balances b ON b.pay_order_id = r.original_order_id
WHERE r.kind IN ('refund', 'void') AND b.pay_order_id IS NULL LIMIT 100

-- name: check_posted_without_entry
SELECT o.pay_order_id FROM orders o
WHERE o.state = 'posted' AND NOT EXISTS (SELECT 1 FROM journal_entries e WHERE e.pay_order_id = o.pay_order_id)
LIMIT 100

-- name: totals_by_merchant
-- Paid and refunded per merchant and currency, net of reversals (a reversal counts against the kind
-- it reverses), over the entries dated in [start, end) (NULL: unbounded). The books' entries (fee,
-- payout, deposit, adjustment) are not sales: books_balances gives them.
SELECT e.mch_id, e.currency::text AS currency,
       coalesce(sum(e.amount) FILTER (WHERE e.kind = 'pay'), 0)
         - coalesce(sum(e.amount) FILTER (WHERE r.kind = 'pay'), 0) AS paid,
       coalesce(sum(e.amount) FILTER (WHERE e.kind IN ('refund', 'void')), 0)
         - coalesce(sum(e.amount) FILTER (WHERE r.kind IN ('refund', 'void')), 0) AS refunded,
       count(*) FILTER (WHERE e.kind = 'pay') - count(*) FILTER (WHERE r.kind = 'pay') AS pays,
       count(*) FILTER (WHERE e.kind IN ('refund', 'void')) - count(*) FILTER (WHERE r.kind IN ('refund', 'void')) AS refunds
FROM journal_entries e LEFT JOIN journal_entries r ON r.id = e.reverses_entry_id
WHERE e.occurred_at >= coalesce(%(start)s::timestamptz, '-infinity')
  AND e.occurred_at < coalesce(%(end)s::timestamptz, 'infinity')
  AND e.kind IN ('pay', 'refund', 'void', 'reversal')
GROUP BY e.mch_id, e.currency ORDER BY e.mch_id, e.currency

-- name: totals_by_merchant_day
-- The same totals per business day (the entry's date in the settlement zone %(tz)s), merchant and
-- currency, over the entries dated in [start, end): `check --date D` and the console's overview
-- both read a day's totals here (worker/ledger/checks.py merchant_day_totals). A reversal is
-- rare: the entry it reverses is looked up for reversals only (a join would hash the journal).
WITH e AS (
    SELECT (j.occurred_at AT TIME ZONE %(tz)s)::date AS business_date, j.mch_id COLLATE "C" AS mch_id,
           j.currency::text COLLATE "C" AS currency, j.kind, j.amount,
           CASE WHEN j.kind = 'reversal'
                THEN (SELECT r.kind FROM journal_entries r WHERE r.id = j.reverses_entry_id) END AS reversed
    FROM journal_entries j
    WHERE j.occurred_at >= %(start)s AND j.occurred_at < %(end)s
)
SELECT business_date, mch_id, currency,
       coalesce(sum(amount) FILTER (WHERE kind = 'pay'), 0)
         - coalesce(sum(amount) FILTER (WHERE reversed = 'pay'), 0) AS paid,
       coalesce(sum(amount) FILTER (WHERE kind IN ('refund', 'void')), 0)
         - coalesce(sum(amount) FILTER (WHERE reversed IN ('refund', 'void')), 0) AS refunded,
       count(*) FILTER (WHERE kind = 'pay') - count(*) FILTER (WHERE reversed = 'pay') AS pays,
       count(*) FILTER (WHERE kind IN ('refund', 'void')) - count(*) FILTER (WHERE reversed IN ('refund', 'void')) AS refunds
FROM e
GROUP BY business_date, mch_id, currency ORDER BY business_date, mch_id, currency

-- name: clearing_by_currency
SELECT a.currency, coalesce(sum(p.amount), 0) AS clearing
FROM accounts a LEFT JOIN postings p ON p.account_id = a.id
WHERE a.kind = 'clearing' GROUP BY a.currency ORDER BY a.currency

-- name: parked_older_than
SELECT pay_order_id, original_order_id, mch_id, amount, currency, first_seen_at FROM orders
WHERE state = 'parked' AND first_seen_at < %(before)s ORDER BY first_seen_at

-- name: lock_orders
-- The advisory locks of a whole batch in one statement, in the order of the array (the caller
-- sorts the keys, as lock_order_tree takes its two): a function scan yields the array's elements
-- in order, and the aggregate takes each lock as its row arrives.
SELECT count(pg_advisory_xact_lock(hashtextextended(k, %(seed)s))) FROM unnest(%(keys)s::text[]) AS k

-- name: check_balance_at_each_statement
-- A batch checks the balance rules (sql/001_ledger.sql) at the end of each statement rather than
-- at commit, so that a refusal rolls back one notify's savepoint, not the whole batch.
SET CONSTRAINTS entry_balanced, posting_balanced IMMEDIATE

-- name: batch_known_orders
-- What a batch must know before it posts its plain notifies as a set (worker/ledger/batch.py),
-- read under the batch's advisory locks: which of its order ids exist, which of its pays have
-- parked refunds, the balance of each pay its refunds draw on, and which merchants' accounts
-- (those not known to the connection yet) were committed before this transaction began.
SELECT 'exists' AS what, pay_order_id AS id, NULL::text AS mch_id, NULL::text AS currency,
       NULL::bigint AS amount, NULL::bigint AS refunded
FROM orders WHERE pay_order_id = ANY(%(ids)s::text[])
UNION ALL
SELECT 'parked', original_order_id, NULL, NULL, NULL, NULL
FROM orders WHERE original_order_id = ANY(%(pays)s::text[]) AND state = 'parked'
UNION ALL
SELECT 'balance', pay_order_id, mch_id, currency, amount, refunded
FROM pay_balances WHERE pay_order_id = ANY(%(originals)s::text[])
UNION ALL
SELECT 'accounts', NULL, mch_id, currency, count(*), NULL
FROM accounts
WHERE (mch_id, currency) IN (SELECT * FROM unnest(%(mch_ids)s::text[], %(currencies)s::text[]))
  AND kind = ANY(%(kinds)s::text[]) AND created_at < now()
GROUP BY mch_id, currency

-- name: post_plain_orders
-- Many plain posts in one statement: each a new order the gateway calls a success (a pay, or a
-- refund or void of a posted pay within its refundable), recorded posted, with its journal entry
-- and two legs; or a new pay it calls pending or failed, recorded so. The rows are those
-- insert_order + insert_entry write one at a time, the entries numbered in the batch's order. The triggers of sql/001_ledger.sql check every row (the balance at
-- the end of this statement, see check_balance_at_each_statement); any refusal fails the whole
-- statement and the batch posts these notifies one at a time instead.
WITH d AS (
    SELECT *
    FROM unnest(%(pay_order_id)s::text[], %(mch_id)s::text[], %(mch_order_no)s::text[], %(pay_type)s::text[],
                %(original_order_id)s::text[], %(currency)s::text[], %(amount)s::bigint[], %(status)s::int[],
                %(state)s::text[], %(gateway_refundable)s::bigint[], %(fingerprint)s::text[], %(channel)s::text[],
                %(card_type)s::text[], %(card_num)s::text[], %(auth_num)s::text[], %(trans_num)s::text[],
                %(invoice_num)s::text[], %(pay_succ_time)s::timestamptz[], %(fields)s::jsonb[])
         WITH ORDINALITY AS d (pay_order_id, mch_id, mch_order_no, pay_type, original_order_id, currency, amount,
                               status, state, gateway_refundable, fingerprint, channel, card_type, card_num, auth_num,
                               trans_num, invoice_num, pay_succ_time, fields, n)
), o AS (
    INSERT INTO orders (pay_order_id, mch_id, mch_order_no, pay_type, original_order_id, currency, amount, status,
                        state, reason, gateway_refundable, fingerprint, channel, card_type, card_num, auth_num,
                        trans_num, invoice_num, pay_succ_time, source, fields, posted_at)
    SELECT pay_order_id, mch_id, mch_order_no, pay_type, original_order_id, currency, amount, status,
           state, NULL, gateway_refundable, fingerprint, channel, card_type, card_num, auth_num,
           trans_num, invoice_num, pay_succ_time, %(source)s, fields, CASE WHEN state = 'posted' THEN now() END
    FROM d ORDER BY n
), e AS (
    INSERT INTO journal_entries (pay_order_id, kind, original_order_id, mch_id, currency, amount, occurred_at, memo)
    SELECT pay_order_id, pay_type, original_order_id, mch_id, currency, amount, coalesce(pay_succ_time, now()), NULL
    FROM d WHERE state = 'posted' ORDER BY n
    RETURNING id, kind, mch_id, currency, amount
)
INSERT INTO postings (entry_id, account_id, mch_id, currency, amount)
SELECT e.id, a.id, e.mch_id, e.currency,
       CASE WHEN a.kind = CASE e.kind WHEN 'pay' THEN 'clearing' WHEN 'refund' THEN 'refunds' ELSE 'sales' END
            THEN e.amount ELSE -e.amount END
FROM e JOIN accounts a ON a.mch_id = e.mch_id AND a.currency = e.currency
    AND a.kind IN ('clearing', CASE e.kind WHEN 'pay' THEN 'sales' WHEN 'refund' THEN 'refunds' ELSE 'sales' END)
RETURNING entry_id

-- name: books_balances
-- The balances of the accounts the books move, per merchant and currency (debit positive).
SELECT a.mch_id, a.currency::text AS currency,
       coalesce(sum(p.amount) FILTER (WHERE a.kind = 'clearing'), 0) AS clearing,
       coalesce(sum(p.amount) FILTER (WHERE a.kind = 'fees'), 0) AS fees,
       coalesce(sum(p.amount) FILTER (WHERE a.kind = 'in_transit'), 0) AS in_transit,
       coalesce(sum(p.amount) FILTER (WHERE a.kind = 'bank'), 0) AS bank
FROM accounts a LEFT JOIN postings p ON p.account_id = a.id
WHERE a.kind IN ('clearing', 'fees', 'in_transit', 'bank')
GROUP BY a.mch_id, a.currency ORDER BY a.mch_id, a.currency

-- name: check_books_documents
-- Every books entry against the document line it was posted from (sql/010_books.sql holds these at
-- commit; this reads them back): a line's fee on fees, a batch's payout (its stated net, else its lines'
-- net) in transit, a deposit's bank transaction in the bank, an adjustment's accounts; and no books
-- entry without its document.
WITH legs AS (
    SELECT p.entry_id, a.kind AS account, sum(p.amount) AS amount
    FROM postings p JOIN accounts a ON a.id = p.account_id
    JOIN journal_entries je ON je.id = p.entry_id AND je.kind IN ('fee', 'payout', 'deposit', 'adjustment')
    GROUP BY 1, 2
)
SELECT 'fee_entry_matches_line' AS rule, l.batch_id || '/' || l.pay_order_id AS subject,
       'fee ' || l.fee || ' but entry ' || coalesce(l.fee_entry_id::text, '(none)') || ' puts '
           || coalesce(g.amount, 0) || ' on fees' AS detail
FROM settlement_lines l LEFT JOIN legs g ON g.entry_id = l.fee_entry_id AND g.account = 'fees'
WHERE coalesce(g.amount, 0) <> l.fee
UNION ALL
SELECT 'payout_matches_batch', b.batch_id,
       'pays out ' || b.payout_amount || ' of a net of ' || coalesce(b.stated_net, n.net) || ', entry '
           || coalesce(b.payout_entry_id::text, '(none)') || ' puts ' || coalesce(g.amount, 0) || ' in transit'
FROM settlement_batches b
JOIN (SELECT batch_id, sum(net) AS net FROM settlement_lines GROUP BY batch_id) n USING (batch_id)
LEFT JOIN legs g ON g.entry_id = b.payout_entry_id AND g.account = 'in_transit'
WHERE coalesce(g.amount, 0) <> b.payout_amount OR b.payout_amount <> coalesce(b.stated_net, n.net)
UNION ALL
SELECT 'deposit_matches_bank_transaction', t.account || '/' || t.txn_id,
       t.amount || ' in the statement but entry ' || d.entry_id || ' puts ' || coalesce(g.amount, 0) || ' in the bank'
FROM bank_deposits d JOIN bank_transactions t ON t.id = d.bank_transaction_id
LEFT JOIN legs g ON g.entry_id = d.entry_id AND g.account = 'bank'
WHERE coalesce(g.amount, 0) <> t.amount
UNION ALL
SELECT 'adjustment_matches_entry', x.key,
       'Dr ' || x.debit_account || ' Cr ' || x.credit_account || ' ' || x.amount || ' but entry ' || x.entry_id
           || ' posts Dr ' || coalesce(dr.amount, 0) || ' Cr ' || -coalesce(cr.amount, 0)
FROM adjustments x
LEFT JOIN legs dr ON dr.entry_id = x.entry_id AND dr.account = x.debit_account
LEFT JOIN legs cr ON cr.entry_id = x.entry_id AND cr.account = x.credit_account
WHERE coalesce(dr.amount, 0) <> x.amount OR coalesce(cr.amount, 0) <> -x.amount
UNION ALL
SELECT 'books_entry_documented', je.id::text, je.kind || ' entry ' || je.doc_key || ' has no document line'
FROM journal_entries je
WHERE je.kind IN ('fee', 'payout', 'deposit', 'adjustment')
  AND NOT EXISTS (SELECT 1 FROM settlement_lines WHERE fee_entry_id = je.id)
  AND NOT EXISTS (SELECT 1 FROM settlement_batches WHERE payout_entry_id = je.id)
  AND NOT EXISTS (SELECT 1 FROM bank_deposits WHERE entry_id = je.id)
  AND NOT EXISTS (SELECT 1 FROM adjustments WHERE entry_id = je.id)
ORDER BY 1, 2 LIMIT 100
