-- Named queries of the books (worker/books/): settlement reports, bank statements, their entries.

-- name: books_lock_imports
-- Imports and adjustments serialise (key: worker/db.py BOOKS_LOCK_KEY): each compares a document with
-- what was imported before, then writes it.
SELECT pg_advisory_xact_lock(%(key)s)

-- name: books_ensure_accounts
INSERT INTO accounts (mch_id, currency, kind)
SELECT %(mch_id)s, %(currency)s, k
FROM unnest(ARRAY['clearing', 'sales', 'refunds', 'fees', 'in_transit', 'bank']) AS k
ON CONFLICT (mch_id, currency, kind) DO NOTHING

-- name: books_post_entries
-- One entry per document line and its two legs, in one statement: a positive amount debits %(debit)s
-- and credits %(credit)s, a negative one the other way round.
WITH src AS (
    SELECT s.doc_key, s.signed FROM unnest(%(doc_keys)s::text[], %(amounts)s::bigint[]) AS s (doc_key, signed)
), e AS (
    INSERT INTO journal_entries (kind, mch_id, currency, amount, occurred_at, memo, doc_key)
    SELECT %(kind)s, %(mch_id)s, %(currency)s, abs(src.signed), %(occurred_at)s, %(memo)s, src.doc_key FROM src
    RETURNING id, doc_key
), legs AS (
    INSERT INTO postings (entry_id, account_id, mch_id, currency, amount)
    SELECT e.id, a.id, a.mch_id, a.currency, CASE WHEN a.kind = %(debit)s THEN src.signed ELSE -src.signed END
    FROM e JOIN src ON src.doc_key = e.doc_key
    JOIN accounts a ON a.mch_id = %(mch_id)s AND a.currency = %(currency)s AND a.kind IN (%(debit)s, %(credit)s)
)
SELECT doc_key, id FROM e

-- name: books_record_import
INSERT INTO book_imports (source, format, file_name, file_sha256, mapping_name, mapping_sha256, rows_read, rows_new)
VALUES (%(source)s, %(format)s, %(file_name)s, %(file_sha256)s, %(mapping_name)s, %(mapping_sha256)s, %(rows_read)s,
        %(rows_new)s)
RETURNING id

-- name: books_order_channels
SELECT pay_order_id, channel FROM orders WHERE pay_order_id = ANY(%(ids)s::text[]) AND channel IS NOT NULL

-- name: books_stored_batches
SELECT b.batch_id, b.mch_id, b.currency::text AS currency, b.settlement_date, b.stated_gross, b.stated_fee,
       b.stated_net, b.import_id, i.file_name
FROM settlement_batches b JOIN book_imports i ON i.id = b.import_id
WHERE b.batch_id = ANY(%(ids)s::text[])

-- name: books_stored_lines
SELECT batch_id, pay_order_id, gross, fee_reported, net_reported, channel
FROM settlement_lines WHERE batch_id = ANY(%(ids)s::text[])

-- name: books_insert_batch
INSERT INTO settlement_batches (batch_id, mch_id, currency, settlement_date, stated_gross, stated_fee, stated_net,
                                payout_amount, payout_entry_id, import_id, total_line_no)
VALUES (%(batch_id)s, %(mch_id)s, %(currency)s, %(settlement_date)s, %(stated_gross)s, %(stated_fee)s, %(stated_net)s,
        %(payout_amount)s, %(payout_entry_id)s, %(import_id)s, %(total_line_no)s)

-- name: books_insert_lines
-- A batch's lines in one statement, each with its fee entry (none for a fee of 0).
INSERT INTO settlement_lines (batch_id, pay_order_id, mch_id, currency, line_no, channel, gross, fee, net,
                              fee_reported, net_reported, fee_expected, fee_source, fee_entry_id)
SELECT %(batch_id)s, l.pay_order_id, %(mch_id)s, %(currency)s, l.line_no, l.channel, l.gross, l.fee, l.gross - l.fee,
       l.fee_reported, l.net_reported, l.fee_expected, l.fee_source, l.fee_entry_id
FROM unnest(%(pay_order_ids)s::text[], %(line_nos)s::integer[], %(channels)s::text[], %(gross)s::bigint[],
            %(fees)s::bigint[], %(fees_reported)s::bigint[], %(nets_reported)s::bigint[], %(fees_expected)s::bigint[],
            %(fee_sources)s::text[], %(fee_entry_ids)s::bigint[])
     AS l (pay_order_id, line_no, channel, gross, fee, fee_reported, net_reported, fee_expected, fee_source, fee_entry_id)

-- name: books_stored_bank_transactions
-- The transactions of these (account, id) pairs imported before, with the import that brought each.
SELECT t.account, t.txn_id, t.posted_on, t.amount, t.currency::text AS currency, t.import_id, i.file_name
FROM bank_transactions t JOIN book_imports i ON i.id = t.import_id
JOIN unnest(%(accounts)s::text[], %(txn_ids)s::text[]) AS k (account, txn_id)
  ON k.account = t.account AND k.txn_id = t.txn_id

-- name: books_insert_bank_transactions
INSERT INTO bank_transactions (account, txn_id, txn_id_derived, bank_id, posted_on, posted_at, amount, currency, type,
                               description, reference, import_id, line_no)
SELECT t.account, t.txn_id, t.txn_id_derived, t.bank_id, t.posted_on, t.posted_at, t.amount, t.currency, t.type,
       t.description, t.reference, %(import_id)s, t.line
FROM unnest(%(account)s::text[], %(txn_id)s::text[], %(txn_id_derived)s::boolean[], %(bank_id)s::text[],
            %(posted_on)s::date[], %(posted_at)s::timestamptz[], %(amount)s::bigint[], %(currency)s::text[],
            %(type)s::text[], %(description)s::text[], %(reference)s::text[], %(line)s::integer[])
     AS t (account, txn_id, txn_id_derived, bank_id, posted_on, posted_at, amount, currency, type, description,
           reference, line)
ORDER BY t.posted_on, t.account, t.txn_id

-- name: books_bank_transaction
SELECT t.id, t.account, t.txn_id, t.posted_on, t.posted_at, t.amount, t.currency::text AS currency,
       d.entry_id AS deposit_entry_id, d.mch_id AS deposit_mch_id
FROM bank_transactions t LEFT JOIN bank_deposits d ON d.bank_transaction_id = t.id
WHERE t.id = %(id)s

-- name: books_insert_deposit
INSERT INTO bank_deposits (entry_id, bank_transaction_id, mch_id, currency)
VALUES (%(entry_id)s, %(bank_transaction_id)s, %(mch_id)s, %(currency)s)

-- name: books_adjustment_by_key
SELECT entry_id, mch_id, currency::text AS currency, debit_account, credit_account, amount, reason, author, mismatch_id
FROM adjustments WHERE key = %(key)s

-- name: books_insert_adjustment
INSERT INTO adjustments (entry_id, mch_id, currency, debit_account, credit_account, amount, reason, author,
                         mismatch_id, key)
VALUES (%(entry_id)s, %(mch_id)s, %(currency)s, %(debit_account)s, %(credit_account)s, %(amount)s, %(reason)s,
        %(author)s, %(mismatch_id)s, %(key)s)
