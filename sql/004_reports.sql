-- Reports: reconciliation runs and their mismatches, alerts (sent once per dedup key),
-- settlement exports (which journal entry went into which day's file), and clock job runs.
-- Independent of the gateway and pipeline tables on purpose: the reconcile query reads them,
-- nothing here references them.

-- One reconciliation of one business day. A re-run is a new run; its mismatches are compared by key.
CREATE TABLE reconcile_runs (
    id             bigserial PRIMARY KEY,
    business_date  date NOT NULL,
    settlement_tz  text NOT NULL,
    window_start   timestamptz NOT NULL,
    window_end     timestamptz NOT NULL CHECK (window_end > window_start),
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at    timestamptz,
    mismatch_count integer,
    counts         jsonb NOT NULL DEFAULT '{}',
    fingerprint    text
);
CREATE INDEX reconcile_runs_date_idx ON reconcile_runs (business_date, id);

-- The classes a difference can fall into, with the sentence an alert and a newcomer read.
CREATE TABLE mismatch_classes (
    class       text PRIMARY KEY,
    description text NOT NULL
);
INSERT INTO mismatch_classes (class, description) VALUES
    ('expected_not_paid', 'the merchant expected this order but the gateway never reported it paid'),
    ('paid_not_in_ledger', 'the gateway reported this order paid but it is not in the ledger'),
    ('unknown_to_merchant', 'in the ledger but the merchant never registered this order'),
    ('amount_mismatch', 'the amount differs between the merchant''s order and the gateway'),
    ('currency_mismatch', 'the currency differs between the merchant''s order (or the original pay) and the gateway'),
    ('refundable_mismatch', 'the gateway''s refundable balance differs from the ledger''s'),
    ('refund_beyond_original', 'a refund or void goes beyond what its original pay allows'),
    ('parked_without_original', 'a refund is parked: its original pay was never seen'),
    ('stuck_pending', 'the order is still pending (or in an undocumented status) at the gateway'),
    ('duplicate_merchant_order', 'one merchant order number has several gateway orders'),
    ('conflict', 'the gateway sent different content for the same order id'),
    ('ledger_exception', 'the ledger refused this order (see the reason)');

CREATE TABLE reconcile_mismatches (
    run_id          bigint NOT NULL REFERENCES reconcile_runs (id),
    class           text NOT NULL REFERENCES mismatch_classes (class),
    subject         text NOT NULL,  -- payOrderId, or mchId/mchOrderNo when the gateway id is unknown
    mch_id          text,
    pay_order_id    text,
    mch_order_no    text,
    currency        text,
    expected_amount bigint,
    gateway_amount  bigint,
    ledger_amount   bigint,
    details         jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, class, subject)
);

-- Every alert ever raised. The unique dedup key is what makes "alerted once" hold across
-- re-runs, several clocks and restarts.
CREATE TABLE alerts (
    id            bigserial PRIMARY KEY,
    dedup_key     text NOT NULL UNIQUE,
    kind          text NOT NULL,
    text          text NOT NULL,
    details       jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    webhook_state text NOT NULL DEFAULT 'none' CHECK (webhook_state IN ('none', 'pending', 'sent', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    sent_at       timestamptz
);
CREATE INDEX alerts_pending_idx ON alerts (id) WHERE webhook_state = 'pending';

-- A closed settlement day: the manifest written, with each file's SHA-256.
CREATE TABLE settlement_exports (
    export_date    date PRIMARY KEY,
    settlement_tz  text NOT NULL,
    version        integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    manifest       jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    restated_at    timestamptz
);

-- Which settlement day's file each journal entry went into. The primary key makes it impossible
-- for one entry to be in two days' files; an entry that arrives after its day was closed goes
-- into the next file as a prior-day adjustment.
CREATE TABLE exported_entries (
    entry_id      bigint PRIMARY KEY REFERENCES journal_entries (id),
    export_date   date NOT NULL REFERENCES settlement_exports (export_date) DEFERRABLE INITIALLY DEFERRED,
    business_date date NOT NULL,
    CHECK (business_date <= export_date)
);
CREATE INDEX exported_entries_export_idx ON exported_entries (export_date, entry_id);

-- Clock jobs: one row per (job, slot). Two clocks inserting the same slot: one wins, the other skips.
CREATE TABLE job_runs (
    job          text NOT NULL,
    slot         text NOT NULL,  -- the scheduled minute (ISO, UTC) or the business date
    clock_id     text NOT NULL,
    status       text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 1,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    result       jsonb,
    error        text,
    PRIMARY KEY (job, slot)
);
