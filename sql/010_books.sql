-- Finance closes the books (issue 16, part 1): what IOTPay kept as fees, what it paid out, what
-- reached the bank, and the manual adjustments between them.
--
-- Accounts per merchant and currency, beside clearing, sales and refunds (sql/001):
--   fees        expense: what IOTPay kept
--   in_transit  asset: paid out by IOTPay, not yet in the bank
--   bank        asset: arrived in the bank
-- Entry kinds, beside pay, refund, void and reversal:
--   fee         Dr fees, Cr clearing           one per settlement line with a fee (a returned fee: the other way)
--   payout      Dr in_transit, Cr clearing     one per settlement batch with a net (a negative net: the other way)
--   deposit     Dr bank, Cr in_transit         one per bank transaction matched to payouts (a debit: the other way)
--   adjustment  between two of clearing, fees, in_transit, bank; entered by a person with a reason
--
-- The rules of sql/001 hold for these entries too (balanced at commit, append-only), and:
--   * an entry of a new kind is keyed by its source document line (doc_key, unique), never by a
--     gateway order id: pay, refund, void and reversal keep pay_order_id (and its one-per-order
--     index); the new kinds have none, so no query about an order ever finds a fee or payout;
--   * every leg is on an account its kind may use (entry_leg_accounts, at the end of each
--     statement); a new-kind entry has at most two legs, on two different accounts, so once
--     balanced it is exactly one debit and one credit;
--   * every new-kind entry is the entry of exactly one document row (a settlement line, a batch,
--     a bank deposit, an adjustment), and its legs carry that row's amount (at commit);
--   * a reversal reverses only a pay, refund or void: a fee, payout, deposit or adjustment is
--     corrected by an adjustment;
--   * only pay, refund, void and reversal go into the settlement file series (entries_awaiting_file):
--     the day's settlement CSV is the day's transactions, whatever the books post.
-- The document tables are append-only, like the journal.

-- ---------------------------------------------------------------- the ledger, extended
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check
    CHECK (kind IN ('clearing', 'sales', 'refunds', 'fees', 'in_transit', 'bank'));
COMMENT ON TABLE accounts IS 'clearing: what IOTPay owes the merchant (asset); sales: revenue; refunds: contra-revenue; '
    'fees: what IOTPay kept (expense); in_transit: paid out by IOTPay, not yet in the bank (asset); bank: arrived (asset)';

ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_kind_check;
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_kind_check
    CHECK (kind IN ('pay', 'refund', 'void', 'reversal', 'fee', 'payout', 'deposit', 'adjustment'));
ALTER TABLE journal_entries ALTER COLUMN pay_order_id DROP NOT NULL;
ALTER TABLE journal_entries ADD COLUMN doc_key text;
-- a gateway order's entry has its order id and no document key; a books entry the other way round
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_keyed CHECK (
    CASE WHEN kind IN ('pay', 'refund', 'void', 'reversal') THEN pay_order_id IS NOT NULL AND doc_key IS NULL
         WHEN kind IN ('fee', 'payout', 'deposit', 'adjustment') THEN pay_order_id IS NULL AND doc_key IS NOT NULL AND doc_key <> ''
         ELSE true END);  -- any other kind is refused by journal_entries_kind_check
-- one entry per source document line
CREATE UNIQUE INDEX journal_entries_one_per_document_line ON journal_entries (doc_key) WHERE doc_key IS NOT NULL;

-- the accounts an entry of each kind may touch
CREATE FUNCTION ledger_leg_accounts(entry_kind text) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE entry_kind
        WHEN 'fee' THEN ARRAY['fees', 'clearing']
        WHEN 'payout' THEN ARRAY['in_transit', 'clearing']
        WHEN 'deposit' THEN ARRAY['bank', 'in_transit']
        WHEN 'adjustment' THEN ARRAY['clearing', 'fees', 'in_transit', 'bank']
        ELSE ARRAY['clearing', 'sales', 'refunds']
    END
$$;

-- At the end of each INSERT into postings, once for the statement: every new leg is on an account
-- its entry's kind may use, and an entry of a new kind has at most two legs on different accounts.
CREATE FUNCTION ledger_check_leg_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT je.id, je.kind, a.kind AS account INTO bad
    FROM added p JOIN journal_entries je ON je.id = p.entry_id JOIN accounts a ON a.id = p.account_id
    WHERE a.kind <> ALL (ledger_leg_accounts(je.kind))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a % entry (%) may not post to the % account', bad.kind, bad.id, bad.account
            USING ERRCODE = 'check_violation', CONSTRAINT = 'entry_leg_accounts';
    END IF;
    SELECT p.entry_id AS id, count(*) AS legs INTO bad
    FROM postings p
    WHERE p.entry_id IN (SELECT n.entry_id FROM added n JOIN journal_entries je ON je.id = n.entry_id
                         WHERE je.kind IN ('fee', 'payout', 'deposit', 'adjustment'))
    GROUP BY p.entry_id
    HAVING count(*) > 2 OR count(DISTINCT p.account_id) < count(*)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % would have % legs: a fee, payout, deposit or adjustment is one debit and one credit',
            bad.id, bad.legs
            USING ERRCODE = 'check_violation', CONSTRAINT = 'entry_leg_accounts';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_leg_accounts AFTER INSERT ON postings
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_leg_accounts();

-- A reversal corrects a gateway order's entry; the books' entries are corrected by adjustments.
CREATE FUNCTION ledger_reversal_of_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    rev_kind text;
BEGIN
    SELECT kind INTO rev_kind FROM journal_entries WHERE id = NEW.reverses_entry_id;
    IF rev_kind IN ('fee', 'payout', 'deposit', 'adjustment') THEN
        RAISE EXCEPTION 'entry % is a % entry: correct it with an adjustment, not a reversal', NEW.reverses_entry_id, rev_kind
            USING ERRCODE = 'check_violation', CONSTRAINT = 'reversal_of_transaction';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER journal_entries_reversal_of_transaction BEFORE INSERT ON journal_entries
    FOR EACH ROW WHEN (NEW.kind = 'reversal') EXECUTE FUNCTION ledger_reversal_of_transaction();

-- Only the gateway's transactions go into the settlement file series (sql/006).
DROP TRIGGER journal_entries_await_file ON journal_entries;
CREATE TRIGGER journal_entries_await_file AFTER INSERT ON journal_entries
    FOR EACH ROW WHEN (NEW.kind IN ('pay', 'refund', 'void', 'reversal')) EXECUTE FUNCTION ledger_await_file();

-- ---------------------------------------------------------------- the documents
-- One imported file that brought something new (a file that brings nothing new records nothing).
CREATE TABLE book_imports (
    id             bigserial PRIMARY KEY,
    source         text NOT NULL CHECK (source IN ('settlement', 'bank')),
    format         text NOT NULL CHECK (format IN ('csv', 'ofx', 'bai2')),
    file_name      text NOT NULL CHECK (file_name <> ''),
    file_sha256    text NOT NULL CHECK (file_sha256 ~ '^[0-9a-f]{64}$'),
    mapping_name   text,
    mapping_sha256 text CHECK (mapping_sha256 ~ '^[0-9a-f]{64}$'),
    rows_read      integer NOT NULL CHECK (rows_read >= 0),
    rows_new       integer NOT NULL CHECK (rows_new > 0),
    imported_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- A settlement batch of IOTPay's report: one merchant, one currency, one settlement date.
CREATE TABLE settlement_batches (
    batch_id        text PRIMARY KEY CHECK (batch_id <> ''),
    mch_id          text NOT NULL CHECK (mch_id <> ''),
    currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    settlement_date date NOT NULL,
    stated_gross    bigint,  -- the batch's own total row, when the report has one
    stated_fee      bigint,
    stated_net      bigint,
    payout_amount   bigint NOT NULL,  -- what IOTPay says it paid: stated_net, else the sum of its lines' net
    payout_entry_id bigint UNIQUE,
    import_id       bigint NOT NULL REFERENCES book_imports (id),
    total_line_no   integer CHECK (total_line_no > 0),
    UNIQUE (batch_id, mch_id, currency),
    FOREIGN KEY (payout_entry_id, mch_id, currency) REFERENCES journal_entries (id, mch_id, currency),
    CHECK ((payout_amount = 0) = (payout_entry_id IS NULL)),
    CHECK ((total_line_no IS NULL) = (num_nonnulls(stated_gross, stated_fee, stated_net) = 0))
);
CREATE INDEX settlement_batches_date_idx ON settlement_batches (settlement_date, mch_id, currency);

-- One transaction line of a batch.
CREATE TABLE settlement_lines (
    batch_id     text NOT NULL,
    pay_order_id text NOT NULL CHECK (pay_order_id <> ''),
    mch_id       text NOT NULL,
    currency     char(3) NOT NULL,
    line_no      integer NOT NULL CHECK (line_no > 0),  -- its line in the file that brought it
    channel      text,
    gross        bigint NOT NULL,
    fee          bigint NOT NULL,  -- the fee posted
    net          bigint NOT NULL,
    fee_reported bigint,           -- as the report gave them (NULL: not given)
    net_reported bigint,
    fee_expected bigint,           -- the fee schedule's fee at import (NULL: no schedule for it)
    fee_source   text NOT NULL CHECK (fee_source IN ('report', 'derived', 'schedule')),
    fee_entry_id bigint UNIQUE,
    PRIMARY KEY (batch_id, pay_order_id),
    FOREIGN KEY (batch_id, mch_id, currency) REFERENCES settlement_batches (batch_id, mch_id, currency),
    FOREIGN KEY (fee_entry_id, mch_id, currency) REFERENCES journal_entries (id, mch_id, currency),
    CHECK (net = gross - fee),
    CHECK (net_reported IS NULL OR net_reported = net),
    CHECK ((fee = 0) = (fee_entry_id IS NULL)),
    CHECK (CASE fee_source
               WHEN 'report' THEN fee_reported = fee
               WHEN 'derived' THEN fee_reported IS NULL AND net_reported IS NOT NULL
               ELSE fee_reported IS NULL AND net_reported IS NULL AND fee_expected = fee END)
);
CREATE INDEX settlement_lines_order_idx ON settlement_lines (pay_order_id);

-- One transaction of a bank statement, keyed by the document's own id in its account.
CREATE TABLE bank_transactions (
    id          bigserial PRIMARY KEY,
    account     text NOT NULL CHECK (account <> ''),
    txn_id      text NOT NULL CHECK (txn_id <> ''),  -- OFX FITID, BAI2 bank reference, the CSV's id column
    txn_id_derived boolean NOT NULL DEFAULT false,  -- the document had no id: derived from its content
    bank_id     text,
    posted_on   date NOT NULL,  -- the bank's date, as the statement writes it
    posted_at   timestamptz,
    amount      bigint NOT NULL CHECK (amount <> 0),  -- a credit (money in) is positive
    currency    char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    type        text,  -- OFX TRNTYPE, BAI2 type code
    description text,
    reference   text,
    import_id   bigint NOT NULL REFERENCES book_imports (id),
    line_no     integer CHECK (line_no > 0),
    UNIQUE (account, txn_id),
    UNIQUE (id, currency)
);
CREATE INDEX bank_transactions_posted_idx ON bank_transactions (posted_on, currency);

-- A bank transaction posted as a deposit of one merchant (once matched to its payouts).
CREATE TABLE bank_deposits (
    entry_id            bigint PRIMARY KEY,
    bank_transaction_id bigint NOT NULL UNIQUE,
    mch_id              text NOT NULL,
    currency            char(3) NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (entry_id, mch_id, currency) REFERENCES journal_entries (id, mch_id, currency),
    FOREIGN KEY (bank_transaction_id, currency) REFERENCES bank_transactions (id, currency)
);

-- A manual adjustment: who, why, between which accounts; it may name the mismatch it settles.
CREATE TABLE adjustments (
    entry_id       bigint PRIMARY KEY,
    mch_id         text NOT NULL,
    currency       char(3) NOT NULL,
    debit_account  text NOT NULL CHECK (debit_account IN ('clearing', 'fees', 'in_transit', 'bank')),
    credit_account text NOT NULL CHECK (credit_account IN ('clearing', 'fees', 'in_transit', 'bank')),
    amount         bigint NOT NULL CHECK (amount > 0),
    reason         text NOT NULL CHECK (btrim(reason) <> ''),
    author         text NOT NULL CHECK (btrim(author) <> ''),
    mismatch_id    bigint,  -- the mismatch it settles (the mismatch table's foreign key comes with it)
    key            text NOT NULL UNIQUE CHECK (key <> ''),
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (entry_id, mch_id, currency) REFERENCES journal_entries (id, mch_id, currency),
    CHECK (debit_account <> credit_account)
);

CREATE TRIGGER book_imports_append_only BEFORE UPDATE OR DELETE ON book_imports
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER book_imports_no_truncate BEFORE TRUNCATE ON book_imports
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER settlement_batches_append_only BEFORE UPDATE OR DELETE ON settlement_batches
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER settlement_batches_no_truncate BEFORE TRUNCATE ON settlement_batches
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER settlement_lines_append_only BEFORE UPDATE OR DELETE ON settlement_lines
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER settlement_lines_no_truncate BEFORE TRUNCATE ON settlement_lines
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER bank_transactions_append_only BEFORE UPDATE OR DELETE ON bank_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER bank_transactions_no_truncate BEFORE TRUNCATE ON bank_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER bank_deposits_append_only BEFORE UPDATE OR DELETE ON bank_deposits
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER bank_deposits_no_truncate BEFORE TRUNCATE ON bank_deposits
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER adjustments_append_only BEFORE UPDATE OR DELETE ON adjustments
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER adjustments_no_truncate BEFORE TRUNCATE ON adjustments
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- ---------------------------------------------------------------- entries and documents agree (at commit)
-- The leg of an entry on one account (0 when none).
CREATE FUNCTION ledger_leg(entry bigint, account_kind text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(p.amount), 0)::bigint FROM postings p JOIN accounts a ON a.id = p.account_id
    WHERE p.entry_id = entry AND a.kind = account_kind
$$;

-- A books entry is the entry of exactly one document row, whose checks below hold.
CREATE FUNCTION books_entry_documented() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    documented boolean;
BEGIN
    documented := CASE NEW.kind
        WHEN 'fee' THEN EXISTS (SELECT 1 FROM settlement_lines WHERE fee_entry_id = NEW.id)
        WHEN 'payout' THEN EXISTS (SELECT 1 FROM settlement_batches WHERE payout_entry_id = NEW.id)
        WHEN 'deposit' THEN EXISTS (SELECT 1 FROM bank_deposits WHERE entry_id = NEW.id)
        ELSE EXISTS (SELECT 1 FROM adjustments WHERE entry_id = NEW.id)
    END;
    IF NOT documented THEN
        RAISE EXCEPTION 'the % entry % has no source document line (a settlement line, batch, bank deposit or adjustment)',
            NEW.kind, NEW.id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'books_entry_documented';
    END IF;
    IF (SELECT coalesce(max(amount), 0) FROM postings WHERE entry_id = NEW.id) <> NEW.amount THEN
        RAISE EXCEPTION 'the % entry % is for % but debits %', NEW.kind, NEW.id, NEW.amount,
            (SELECT coalesce(max(amount), 0) FROM postings WHERE entry_id = NEW.id)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'books_entry_matches_document';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER books_entry_documented AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.kind IN ('fee', 'payout', 'deposit', 'adjustment'))
    EXECUTE FUNCTION books_entry_documented();

CREATE FUNCTION books_entry_of(entry bigint, expected text, what text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    found_kind text;
BEGIN
    SELECT kind INTO found_kind FROM journal_entries WHERE id = entry;
    IF found_kind IS DISTINCT FROM expected THEN
        RAISE EXCEPTION '% points at entry %, a % entry, not a % entry', what, entry, coalesce(found_kind, 'missing'), expected
            USING ERRCODE = 'check_violation', CONSTRAINT = 'books_entry_matches_document';
    END IF;
END $$;

-- a line's fee entry puts exactly its fee on the fees account
CREATE FUNCTION books_line_checked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.fee_entry_id IS NOT NULL THEN
        PERFORM books_entry_of(NEW.fee_entry_id, 'fee', format('settlement line %s/%s', NEW.batch_id, NEW.pay_order_id));
        IF ledger_leg(NEW.fee_entry_id, 'fees') <> NEW.fee THEN
            RAISE EXCEPTION 'settlement line %/% has fee % but its entry % puts % on fees', NEW.batch_id, NEW.pay_order_id,
                NEW.fee, NEW.fee_entry_id, ledger_leg(NEW.fee_entry_id, 'fees')
                USING ERRCODE = 'check_violation', CONSTRAINT = 'books_entry_matches_document';
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER settlement_lines_checked AFTER INSERT ON settlement_lines
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION books_line_checked();

-- a batch has lines, pays out its stated net (else the sum of its lines' net), and its payout
-- entry puts exactly that on in_transit
CREATE FUNCTION books_batch_checked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lines integer;
    lines_net numeric;
BEGIN
    SELECT count(*), coalesce(sum(net), 0) INTO lines, lines_net FROM settlement_lines WHERE batch_id = NEW.batch_id;
    IF lines = 0 THEN
        RAISE EXCEPTION 'settlement batch % has no lines', NEW.batch_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'books_batch_pays_its_net';
    END IF;
    IF NEW.payout_amount <> coalesce(NEW.stated_net, lines_net) THEN
        RAISE EXCEPTION 'settlement batch % pays out % but its net is %', NEW.batch_id, NEW.payout_amount,
            coalesce(NEW.stated_net, lines_net)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'books_batch_pays_its_net';
    END IF;
    IF NEW.payout_entry_id IS NOT NULL THEN
        PERFORM books_entry_of(NEW.payout_entry_id, 'payout', format('settlement batch %s', NEW.batch_id));
        IF ledger_leg(NEW.payout_entry_id, 'in_transit') <> NEW.payout_amount THEN
            RAISE EXCEPTION 'settlement batch % pays out % but its entry % puts % in transit', NEW.batch_id,
                NEW.payout_amount, NEW.payout_entry_id, ledger_leg(NEW.payout_entry_id, 'in_transit')
                USING ERRCODE = 'check_violation', CONSTRAINT = 'books_entry_matches_document';
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER settlement_batches_checked AFTER INSERT ON settlement_batches
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION books_batch_checked();

-- a deposit puts exactly its bank transaction's amount in the bank
CREATE FUNCTION books_deposit_checked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    txn_amount bigint;
BEGIN
    PERFORM books_entry_of(NEW.entry_id, 'deposit', format('bank deposit of transaction %s', NEW.bank_transaction_id));
    SELECT amount INTO txn_amount FROM bank_transactions WHERE id = NEW.bank_transaction_id;
    IF ledger_leg(NEW.entry_id, 'bank') <> txn_amount THEN
        RAISE EXCEPTION 'bank transaction % is % but its deposit entry % puts % in the bank', NEW.bank_transaction_id,
            txn_amount, NEW.entry_id, ledger_leg(NEW.entry_id, 'bank')
            USING ERRCODE = 'check_violation', CONSTRAINT = 'books_entry_matches_document';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER bank_deposits_checked AFTER INSERT ON bank_deposits
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION books_deposit_checked();

-- an adjustment's entry debits and credits the accounts it names, by its amount
CREATE FUNCTION books_adjustment_checked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM books_entry_of(NEW.entry_id, 'adjustment', format('adjustment %s', NEW.key));
    IF ledger_leg(NEW.entry_id, NEW.debit_account) <> NEW.amount
       OR ledger_leg(NEW.entry_id, NEW.credit_account) <> -NEW.amount THEN
        RAISE EXCEPTION 'adjustment % (Dr % Cr % %) does not match its entry %', NEW.key, NEW.debit_account,
            NEW.credit_account, NEW.amount, NEW.entry_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'books_entry_matches_document';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER adjustments_checked AFTER INSERT ON adjustments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION books_adjustment_checked();
