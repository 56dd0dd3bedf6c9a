-- Filing a day's entries is one set-based statement (export_assign: a DELETE from
-- entries_awaiting_file feeding an INSERT into exported_entries), but its checks ran row by row:
-- a foreign-key lookup in journal_entries per entry (locking each entry's row), then at commit a
-- foreign-key lookup in settlement_exports and a PL/pgSQL trigger per entry. For a day of
-- 1,000,000 entries that was about four fifths of the time of filing it (bench_reports).
--
-- The same rules, under the same constraint names, are now checked once per statement over the
-- statement's transition table:
--   * exported_entries_entry_id_fkey: a filed entry is a journal entry, checked at once
--     (journal_entries is append-only: UPDATE, DELETE and TRUNCATE raise, so the referenced side
--     needs no guard);
--   * exported_entries_export_date_fkey: the day entries are filed into is a recorded day in
--     settlement_exports, checked at commit (the export records the day after writing its files);
--     a recorded day holding entries is never deleted, truncated or renamed;
--   * entry_filed_once: an entry is awaiting a file or in one, never both, checked at commit;
--   * and a filed entry stays in its file: exported_entries is append-only.
-- The checks at commit go through filing_checks: at the end of each INSERT the rows that do not
-- satisfy a rule yet (normally none: the export's statement takes its entries out of
-- entries_awaiting_file as it files them, and a first export records its day last) are queued
-- there, and a deferred constraint trigger checks each of those again at commit. filing_checks is
-- empty between transactions.

ALTER TABLE exported_entries DROP CONSTRAINT exported_entries_entry_id_fkey;
ALTER TABLE exported_entries DROP CONSTRAINT exported_entries_export_date_fkey;
DROP TRIGGER exported_entries_filed_once ON exported_entries;
DROP FUNCTION ledger_entry_filed();

CREATE TABLE filing_checks (
    entry_id    bigint,  -- an entry filed while it was still awaiting a file
    export_date date,    -- a day entries were filed into before it was recorded
    CHECK (num_nonnulls(entry_id, export_date) = 1)
);

CREATE FUNCTION ledger_filing_checked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad bigint;
BEGIN
    SELECT n.entry_id INTO bad FROM filed n
    WHERE NOT EXISTS (SELECT 1 FROM journal_entries je WHERE je.id = n.entry_id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'exported_entries: % is not a journal entry', bad
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'exported_entries_entry_id_fkey';
    END IF;
    INSERT INTO filing_checks (entry_id)
    SELECT n.entry_id FROM filed n JOIN entries_awaiting_file a ON a.entry_id = n.entry_id;
    INSERT INTO filing_checks (export_date)
    SELECT DISTINCT n.export_date FROM filed n
    WHERE NOT EXISTS (SELECT 1 FROM settlement_exports s WHERE s.export_date = n.export_date);
    RETURN NULL;
END $$;
CREATE TRIGGER exported_entries_filed AFTER INSERT ON exported_entries
    REFERENCING NEW TABLE AS filed FOR EACH STATEMENT EXECUTE FUNCTION ledger_filing_checked();

CREATE FUNCTION ledger_filing_check_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.entry_id IS NOT NULL AND EXISTS (SELECT 1 FROM entries_awaiting_file WHERE entry_id = NEW.entry_id) THEN
        RAISE EXCEPTION 'entry % is put in a file while still awaiting one', NEW.entry_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'entry_filed_once';
    END IF;
    IF NEW.export_date IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM settlement_exports WHERE export_date = NEW.export_date) THEN
        RAISE EXCEPTION 'entries are filed into %, which is not in settlement_exports', NEW.export_date
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'exported_entries_export_date_fkey';
    END IF;
    DELETE FROM filing_checks
    WHERE entry_id IS NOT DISTINCT FROM NEW.entry_id AND export_date IS NOT DISTINCT FROM NEW.export_date;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER filing_checks_at_commit AFTER INSERT ON filing_checks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_filing_check_at_commit();

-- a correction is a new (reversing) entry, which goes into a later file
CREATE TRIGGER exported_entries_append_only BEFORE UPDATE OR DELETE ON exported_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER exported_entries_no_truncate BEFORE TRUNCATE ON exported_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- the referenced side of exported_entries_export_date_fkey
CREATE FUNCTION reports_day_holds_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        IF EXISTS (SELECT 1 FROM exported_entries) THEN
            RAISE EXCEPTION 'settlement_exports: TRUNCATE is not allowed while exported_entries holds entries'
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'exported_entries_export_date_fkey';
        END IF;
        RETURN NULL;
    END IF;
    IF (TG_OP = 'DELETE' OR NEW.export_date <> OLD.export_date)
       AND EXISTS (SELECT 1 FROM exported_entries WHERE export_date = OLD.export_date) THEN
        RAISE EXCEPTION 'settlement_exports: % of % is not allowed, its file holds entries', TG_OP, OLD.export_date
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'exported_entries_export_date_fkey';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER settlement_exports_holds_entries BEFORE DELETE OR UPDATE OF export_date ON settlement_exports
    FOR EACH ROW EXECUTE FUNCTION reports_day_holds_entries();
CREATE TRIGGER settlement_exports_no_truncate BEFORE TRUNCATE ON settlement_exports
    FOR EACH STATEMENT EXECUTE FUNCTION reports_day_holds_entries();
