-- The demo's read-outs (worker/demo/): what it waits for and what it reports.

-- name: demo_inbox_open
-- Notifies acknowledged but not processed yet: the demo waits until there are none.
SELECT count(*) FROM inbox WHERE state IN ('received', 'queued')

-- name: demo_order_source
-- Who told the ledger about an order (notify or query) and where it stands.
SELECT source, state FROM orders WHERE pay_order_id = %(pay_order_id)s

-- name: demo_entry_count
SELECT count(*) FROM journal_entries
