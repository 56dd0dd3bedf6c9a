-- The double-entry ledger. Rules that must always hold are enforced here, not in Python:
--   * every journal entry balances (deferred constraint trigger, checked at commit);
--   * journal entries and postings are append-only (UPDATE, DELETE, TRUNCATE raise);
--   * one entry per gateway order id (a reversal is its own entry, pointing at the one it reverses);
--   * a refund or void posts only against a posted pay of the same merchant and currency;
--   * the refunded total of a pay order never exceeds its amount;
--   * CAD and USD never meet in one entry (postings carry the currency into composite keys).
-- Money is bigint cents. Debits are positive, credits negative.

CREATE TABLE accounts (
    id          bigserial PRIMARY KEY,
    mch_id      text NOT NULL CHECK (mch_id <> ''),
    currency    char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    kind        text NOT NULL CHECK (kind IN ('clearing', 'sales', 'refunds')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (mch_id, currency, kind),
    UNIQUE (id, mch_id, currency)
);
COMMENT ON TABLE accounts IS 'clearing: what IOTPay owes the merchant (asset); sales: revenue; refunds: contra-revenue';

-- Every order the gateway told us about (pay, refund, void), in any status: what the gateway said.
CREATE TABLE orders (
    pay_order_id       text PRIMARY KEY CHECK (pay_order_id <> ''),
    mch_id             text NOT NULL,
    mch_order_no       text,
    pay_type           text NOT NULL CHECK (pay_type IN ('pay', 'refund', 'void')),
    original_order_id  text,
    currency           char(3) NOT NULL,
    amount             bigint NOT NULL,
    status             integer NOT NULL,
    state              text NOT NULL CHECK (state IN ('pending', 'posted', 'failed', 'parked', 'rejected', 'unknown')),
    reason             text,
    gateway_refundable bigint,
    fingerprint        text NOT NULL,
    channel            text,
    card_type          text,
    card_num           text CHECK (card_num IS NULL OR card_num !~ '\d{11}'),
    auth_num           text,
    trans_num          text,
    invoice_num        text,
    pay_succ_time      timestamptz,
    source             text NOT NULL CHECK (source IN ('notify', 'query', 'ingest')),
    fields             jsonb NOT NULL DEFAULT '{}',
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    posted_at          timestamptz,
    CHECK ((pay_type = 'pay') = (original_order_id IS NULL))
);
CREATE INDEX orders_original_idx ON orders (original_order_id) WHERE original_order_id IS NOT NULL;
CREATE INDEX orders_state_idx ON orders (state) WHERE state IN ('pending', 'parked', 'unknown');
CREATE INDEX orders_mch_order_no_idx ON orders (mch_id, mch_order_no);

CREATE TABLE journal_entries (
    id                bigserial PRIMARY KEY,
    pay_order_id      text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('pay', 'refund', 'void', 'reversal')),
    original_order_id text,
    mch_id            text NOT NULL,
    currency          char(3) NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    reverses_entry_id bigint UNIQUE REFERENCES journal_entries (id),
    occurred_at       timestamptz NOT NULL,
    posted_at         timestamptz NOT NULL DEFAULT now(),
    memo              text,
    UNIQUE (id, mch_id, currency),
    CHECK ((kind IN ('refund', 'void')) = (original_order_id IS NOT NULL)),
    CHECK ((kind = 'reversal') = (reverses_entry_id IS NOT NULL))
);
-- one entry per gateway order id; reversals are the only second entry an order id may get
CREATE UNIQUE INDEX journal_entries_one_per_order ON journal_entries (pay_order_id) WHERE kind <> 'reversal';
CREATE INDEX journal_entries_original_idx ON journal_entries (original_order_id) WHERE original_order_id IS NOT NULL;
CREATE INDEX journal_entries_occurred_idx ON journal_entries (occurred_at);

CREATE TABLE postings (
    id          bigserial PRIMARY KEY,
    entry_id    bigint NOT NULL,
    account_id  bigint NOT NULL,
    mch_id      text NOT NULL,
    currency    char(3) NOT NULL,
    amount      bigint NOT NULL CHECK (amount <> 0),
    FOREIGN KEY (entry_id, mch_id, currency) REFERENCES journal_entries (id, mch_id, currency),
    FOREIGN KEY (account_id, mch_id, currency) REFERENCES accounts (id, mch_id, currency)
);
CREATE INDEX postings_entry_idx ON postings (entry_id);
CREATE INDEX postings_account_idx ON postings (account_id);

-- Each posted pay order's refundable balance. Written only by the journal trigger below.
CREATE TABLE pay_balances (
    pay_order_id text PRIMARY KEY,
    entry_id     bigint NOT NULL UNIQUE REFERENCES journal_entries (id),
    mch_id       text NOT NULL,
    currency     char(3) NOT NULL,
    amount       bigint NOT NULL CHECK (amount > 0),
    refunded     bigint NOT NULL DEFAULT 0,
    refundable   bigint GENERATED ALWAYS AS (amount - refunded) STORED,
    CONSTRAINT refunded_within_amount CHECK (refunded >= 0 AND refunded <= amount)
);

-- Anything the ledger refused or noticed: conflicts, over-refunds, mismatches. One row per distinct finding.
CREATE TABLE ledger_exceptions (
    id           bigserial PRIMARY KEY,
    pay_order_id text NOT NULL,
    kind         text NOT NULL CHECK (kind IN (
                     'conflict', 'over_refund', 'currency_mismatch', 'merchant_mismatch', 'non_positive_amount',
                     'refundable_mismatch', 'unknown_status', 'void_not_full', 'parked_too_long')),
    reason       text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}',
    dedup_key    text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_exceptions_order_idx ON ledger_exceptions (pay_order_id);

-- ---------------------------------------------------------------- rules
CREATE FUNCTION ledger_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed (post a reversing entry instead)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- At commit: the entry has at least two legs and they sum to zero.
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    eid bigint;
    legs integer;
    total numeric;
BEGIN
    IF TG_TABLE_NAME = 'postings' THEN
        eid := NEW.entry_id;
    ELSE
        eid := NEW.id;
    END IF;
    SELECT count(*), coalesce(sum(amount), 0) INTO legs, total FROM postings WHERE entry_id = eid;
    IF legs < 2 OR total <> 0 THEN
        RAISE EXCEPTION 'journal entry % does not balance: % leg(s) summing to %', eid, legs, total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'entry_balanced';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER entry_balanced AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();
CREATE CONSTRAINT TRIGGER posting_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

-- A new entry moves the pay's refundable balance: a pay opens it, a refund or void draws it down.
CREATE FUNCTION ledger_track_refundable() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    pay pay_balances%ROWTYPE;
    rev journal_entries%ROWTYPE;
BEGIN
    IF NEW.kind = 'pay' THEN
        INSERT INTO pay_balances (pay_order_id, entry_id, mch_id, currency, amount)
        VALUES (NEW.pay_order_id, NEW.id, NEW.mch_id, NEW.currency, NEW.amount);
    ELSIF NEW.kind IN ('refund', 'void') THEN
        SELECT * INTO pay FROM pay_balances WHERE pay_order_id = NEW.original_order_id FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'refund % has no posted original pay %', NEW.pay_order_id, NEW.original_order_id
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'refund_needs_original';
        END IF;
        IF pay.currency <> NEW.currency OR pay.mch_id <> NEW.mch_id THEN
            RAISE EXCEPTION 'refund % is %/% but its original % is %/%', NEW.pay_order_id, NEW.mch_id, NEW.currency,
                NEW.original_order_id, pay.mch_id, pay.currency
                USING ERRCODE = 'check_violation', CONSTRAINT = 'refund_same_currency';
        END IF;
        IF NEW.kind = 'void' AND (pay.refunded <> 0 OR NEW.amount <> pay.amount) THEN
            RAISE EXCEPTION 'void % must reverse its pay % in full (% of %, % already refunded)', NEW.pay_order_id,
                NEW.original_order_id, NEW.amount, pay.amount, pay.refunded
                USING ERRCODE = 'check_violation', CONSTRAINT = 'void_in_full';
        END IF;
        -- the CHECK refunded_within_amount on pay_balances refuses a refund beyond the refundable
        UPDATE pay_balances SET refunded = refunded + NEW.amount WHERE pay_order_id = NEW.original_order_id;
    ELSIF NEW.kind = 'reversal' THEN
        -- a correction: reversing a refund gives its amount back; reversing a pay leaves nothing refundable
        SELECT * INTO rev FROM journal_entries WHERE id = NEW.reverses_entry_id;
        IF rev.amount <> NEW.amount OR rev.currency <> NEW.currency OR rev.mch_id <> NEW.mch_id
           OR rev.pay_order_id <> NEW.pay_order_id OR rev.kind = 'reversal' THEN
            RAISE EXCEPTION 'reversal % must mirror entry % (same order, merchant, currency, amount)', NEW.id, rev.id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'reversal_mirrors';
        END IF;
        IF rev.kind IN ('refund', 'void') THEN
            UPDATE pay_balances SET refunded = refunded - NEW.amount WHERE pay_order_id = rev.original_order_id;
        ELSE
            UPDATE pay_balances SET refunded = amount WHERE pay_order_id = rev.pay_order_id AND refunded = 0;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'pay % has refunds: reverse them before reversing the pay', rev.pay_order_id
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'reversal_order';
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER journal_entries_track_refundable AFTER INSERT ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_track_refundable();

-- pay_balances may only change through the journal trigger above (trigger depth > 1).
CREATE FUNCTION ledger_guard_balances() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'pay_balances is maintained by the journal: % is not allowed', TG_OP
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE TRIGGER pay_balances_guard BEFORE INSERT OR UPDATE OR DELETE ON pay_balances
    FOR EACH ROW EXECUTE FUNCTION ledger_guard_balances();
CREATE TRIGGER pay_balances_no_truncate BEFORE TRUNCATE ON pay_balances
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();
