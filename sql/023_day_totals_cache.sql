-- The console's overview charts 30 closed days of totals per merchant and currency: over a
-- million entries that is the one aggregate a page would otherwise compute on every view. Each
-- closed day's totals (the query `check --date D` runs, totals_by_merchant_day) are kept here with
-- the count of journal entries they were computed from. The journal is append-only (its triggers
-- refuse UPDATE, DELETE and TRUNCATE), so of two snapshots one holds every entry of the other:
-- when a day's window holds the same number of entries now, it holds the same entries, and the
-- kept totals are still the day's. A late entry changes the count, and the day is computed again.
-- Only a read model: nothing here is ever the source of a figure it was not computed from.
CREATE TABLE day_totals_cache (
    tz            text NOT NULL,
    business_date date NOT NULL,
    entries       bigint NOT NULL CHECK (entries >= 0),
    totals        jsonb NOT NULL,
    computed_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tz, business_date)
);
