-- Filing a day's entries cost a row per entry in exported_entries: a heap tuple, two index
-- entries, their WAL and a check per entry. For a day of 1,000,000 entries that took about as
-- long as copying the day's rows out of PostgreSQL (bench_reports). The export now files a day's
-- entries as runs of consecutive entry ids, one row per run (filed_runs): a day posted in order
-- is a handful of rows, whatever its size. exported_entries stays for entries filed one at a time
-- (by hand, by earlier versions of the export), and filed_entries shows both: every filed entry
-- with the day whose file holds it and its business date.
--
-- The rules, in the database as before, under the same names where they are the same rule:
--   * an entry is in at most one file: runs never overlap (filed_runs_no_overlap), and no run
--     covers an entry of exported_entries, nor exported_entries an entry of a run
--     (filed_runs_filed_once, checked once per statement both ways, under the export's lock so
--     that two transactions cannot file one entry twice);
--   * every id of a run is a journal entry (filed_runs_entry_id_fkey), so no entry posted later
--     can ever fall inside a run (journal_entries' primary key);
--   * a run holds no entry of a business day after its file's day (filed_runs_business_date_check);
--   * at commit, no entry of a run still awaits a file (entry_filed_once) and the run's day is a
--     recorded day in settlement_exports (exported_entries_export_date_fkey): filing_checks;
--   * runs are append-only, and a recorded day holding runs keeps its date and stays.
-- Each run is checked with one index range scan of journal_entries: a million entries are checked
-- in a fraction of a second, not a lookup each.

CREATE TABLE filed_runs (
    export_date   date NOT NULL,
    settlement_tz text NOT NULL,  -- an entry's business date is the date of its occurred_at in this zone
    first_entry   bigint NOT NULL,
    last_entry    bigint NOT NULL,
    CONSTRAINT filed_runs_check CHECK (first_entry <= last_entry),
    CONSTRAINT filed_runs_no_overlap EXCLUDE USING gist (int8range(first_entry, last_entry, '[]') WITH &&)
);
CREATE INDEX filed_runs_export_idx ON filed_runs (export_date);

-- the export's lock (worker/db.py EXPORT_LOCK_KEY): whoever files entries waits for a running export
CREATE FUNCTION reports_filing_lock() RETURNS void LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(7201944032) $$;

CREATE FUNCTION reports_runs_checked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    PERFORM reports_filing_lock();
    SELECT r.first_entry, r.last_entry, s.entries, s.latest INTO bad
    FROM runs r
    CROSS JOIN LATERAL (SELECT count(*) AS entries, max(je.occurred_at) AS latest FROM journal_entries je
                        WHERE je.id BETWEEN r.first_entry AND r.last_entry) s
    WHERE s.entries <> r.last_entry - r.first_entry + 1
       OR (s.latest AT TIME ZONE r.settlement_tz)::date > r.export_date
    LIMIT 1;
    IF FOUND AND bad.entries <> bad.last_entry - bad.first_entry + 1 THEN
        RAISE EXCEPTION 'filed_runs: entries % to % are not all journal entries', bad.first_entry, bad.last_entry
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'filed_runs_entry_id_fkey';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'filed_runs: entries % to % include one of a business day after the file''s day',
            bad.first_entry, bad.last_entry
            USING ERRCODE = 'check_violation', CONSTRAINT = 'filed_runs_business_date_check';
    END IF;
    SELECT x.entry_id INTO bad FROM runs r
    JOIN exported_entries x ON x.entry_id BETWEEN r.first_entry AND r.last_entry LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry % is in a file already', bad.entry_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'filed_runs_filed_once';
    END IF;
    INSERT INTO filing_checks (entry_id)
    SELECT a.entry_id FROM runs r JOIN entries_awaiting_file a ON a.entry_id BETWEEN r.first_entry AND r.last_entry;
    INSERT INTO filing_checks (export_date)
    SELECT d.export_date FROM (SELECT DISTINCT export_date FROM runs) d
    WHERE NOT EXISTS (SELECT 1 FROM settlement_exports s WHERE s.export_date = d.export_date);
    RETURN NULL;
END $$;
CREATE TRIGGER filed_runs_checked AFTER INSERT ON filed_runs
    REFERENCING NEW TABLE AS runs FOR EACH STATEMENT EXECUTE FUNCTION reports_runs_checked();
CREATE TRIGGER filed_runs_append_only BEFORE UPDATE OR DELETE ON filed_runs
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
CREATE TRIGGER filed_runs_no_truncate BEFORE TRUNCATE ON filed_runs
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_change();

-- the other way: an entry filed alone is in no run
CREATE FUNCTION reports_filed_alone_checked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad bigint;
BEGIN
    PERFORM reports_filing_lock();
    SELECT n.entry_id INTO bad FROM filed n
    JOIN filed_runs r ON int8range(r.first_entry, r.last_entry, '[]') @> n.entry_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry % is in a file already', bad
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'filed_runs_filed_once';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER exported_entries_not_in_a_run AFTER INSERT ON exported_entries
    REFERENCING NEW TABLE AS filed FOR EACH STATEMENT EXECUTE FUNCTION reports_filed_alone_checked();

-- the referenced side of the rule that a run's day is recorded: as for exported_entries
CREATE OR REPLACE FUNCTION reports_day_holds_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        IF EXISTS (SELECT 1 FROM exported_entries) OR EXISTS (SELECT 1 FROM filed_runs) THEN
            RAISE EXCEPTION 'settlement_exports: TRUNCATE is not allowed while exported_entries holds entries'
                USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'exported_entries_export_date_fkey';
        END IF;
        RETURN NULL;
    END IF;
    IF (TG_OP = 'DELETE' OR NEW.export_date <> OLD.export_date)
       AND (EXISTS (SELECT 1 FROM exported_entries WHERE export_date = OLD.export_date)
            OR EXISTS (SELECT 1 FROM filed_runs WHERE export_date = OLD.export_date)) THEN
        RAISE EXCEPTION 'settlement_exports: % of % is not allowed, its file holds entries', TG_OP, OLD.export_date
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'exported_entries_export_date_fkey';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

-- every filed journal entry with the day whose file holds it and its business date
CREATE VIEW filed_journal_entries AS
SELECT x.export_date, x.business_date, je.id, je.pay_order_id, je.kind, je.original_order_id, je.mch_id, je.currency,
       je.amount, je.reverses_entry_id, je.occurred_at
FROM exported_entries x JOIN journal_entries je ON je.id = x.entry_id
UNION ALL
SELECT r.export_date, (je.occurred_at AT TIME ZONE r.settlement_tz)::date, je.id, je.pay_order_id, je.kind,
       je.original_order_id, je.mch_id, je.currency, je.amount, je.reverses_entry_id, je.occurred_at
FROM filed_runs r JOIN journal_entries je ON je.id BETWEEN r.first_entry AND r.last_entry;

CREATE VIEW filed_entries AS
SELECT id AS entry_id, export_date, business_date FROM filed_journal_entries;
