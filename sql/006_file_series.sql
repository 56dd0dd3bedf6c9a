-- Finance can trust the file series.
--   * entries_awaiting_file: every journal entry not yet in any day's file. A trigger adds each
--     new entry; an export takes (deletes) the ones it puts in its file. "Not yet in any file" is
--     this table, never a time window, so a late entry, an old day exported late, or a backfill
--     dated before the first file all land in exactly one file.
--   * settlement_files: every version of every day's files (settlement_exports keeps the latest);
--     nothing handed to finance is overwritten, a restatement is a new version beside the old.
--   * expected_refunds: the refunds the merchant asked for (opt-in, per merchant), so that
--     reconcile can flag a refund nobody requested and a requested refund that never happened.

CREATE TABLE entries_awaiting_file (
    entry_id    bigint PRIMARY KEY REFERENCES journal_entries (id),
    occurred_at timestamptz NOT NULL
);
CREATE INDEX entries_awaiting_file_occurred_idx ON entries_awaiting_file (occurred_at);

CREATE FUNCTION ledger_await_file() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO entries_awaiting_file (entry_id, occurred_at) VALUES (NEW.id, NEW.occurred_at);
    RETURN NULL;
END $$;

CREATE TRIGGER journal_entries_await_file AFTER INSERT ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_await_file();

INSERT INTO entries_awaiting_file (entry_id, occurred_at)
SELECT je.id, je.occurred_at FROM journal_entries je
WHERE NOT EXISTS (SELECT 1 FROM exported_entries x WHERE x.entry_id = je.id);

-- an entry is awaiting a file or in exactly one file, never both
CREATE FUNCTION ledger_entry_filed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM entries_awaiting_file WHERE entry_id = NEW.entry_id) THEN
        RAISE EXCEPTION 'entry % is put in a file while still awaiting one', NEW.entry_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'entry_filed_once';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER exported_entries_filed_once AFTER INSERT ON exported_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_entry_filed();

CREATE TABLE settlement_files (
    export_date     date NOT NULL,
    version         integer NOT NULL CHECK (version >= 1),
    status          text NOT NULL CHECK (status IN ('final', 'restated')),
    manifest_name   text NOT NULL,
    manifest_sha256 text NOT NULL CHECK (manifest_sha256 ~ '^[0-9a-f]{64}$'),
    manifest        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (export_date, version)
);
CREATE FUNCTION reports_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% keeps every version: % is not allowed', TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER settlement_files_append_only BEFORE UPDATE OR DELETE ON settlement_files
    FOR EACH ROW EXECUTE FUNCTION reports_forbid_change();

CREATE TABLE expected_refunds (
    mch_id            text NOT NULL CHECK (mch_id <> ''),
    mch_refund_no     text NOT NULL CHECK (mch_refund_no <> ''),
    original_order_id text NOT NULL CHECK (original_order_id <> ''),
    amount            bigint NOT NULL CHECK (amount > 0),
    currency          char(3) NOT NULL CHECK (currency IN ('CAD', 'USD')),
    requested_at      timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mch_id, mch_refund_no)
);
CREATE INDEX expected_refunds_requested_idx ON expected_refunds (requested_at);
CREATE INDEX expected_refunds_original_idx ON expected_refunds (original_order_id);
CREATE INDEX orders_refund_no_idx ON orders (mch_id, mch_order_no) WHERE pay_type <> 'pay';

INSERT INTO mismatch_classes (class, description) VALUES
    ('refund_not_requested', 'the gateway refunded or voided this order but the merchant never requested that refund'),
    ('requested_refund_missing', 'the merchant requested this refund but the gateway never reported it');
