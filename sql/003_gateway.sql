-- Gateway: the orders the merchant's checkout says it created (expected orders), and the
-- sweep's state for each order it asks IOTPay about. The reconciliation reads expected_orders
-- (mch_id, mch_order_no, pay_order_id, amount, currency, channel, created_at, gave_up_at).

CREATE TABLE expected_orders (
    mch_id          text NOT NULL CHECK (mch_id <> ''),
    mch_order_no    text NOT NULL CHECK (mch_order_no <> ''),
    pay_order_id    text CHECK (pay_order_id IS NULL OR pay_order_id <> ''),
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        char(3) NOT NULL CHECK (currency IN ('CAD', 'USD')),
    channel         text NOT NULL CHECK (channel <> ''),
    family          text NOT NULL CHECK (family IN ('v3', 'v1')),  -- which API answers queries about it
    created_at      timestamptz NOT NULL,                           -- when the checkout created it
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    next_query_at   timestamptz,                                    -- NULL: resolved or given up
    query_count     integer NOT NULL DEFAULT 0 CHECK (query_count >= 0),
    last_queried_at timestamptz,
    last_status     integer,                                        -- the gateway's status at the last answer
    last_error      text,                                           -- why the last query got no answer
    resolved_at     timestamptz,
    resolution      text CHECK (resolution IN ('paid', 'failed', 'rejected', 'conflict')),
    gave_up_at      timestamptz,
    PRIMARY KEY (mch_id, mch_order_no),
    CHECK (family = 'v1' OR currency = 'CAD'),                       -- V3 is CAD only
    CHECK ((resolved_at IS NULL) = (resolution IS NULL)),
    -- nothing resolved or given up is ever queried again
    CHECK (next_query_at IS NULL OR (resolved_at IS NULL AND gave_up_at IS NULL))
);
CREATE INDEX expected_orders_due_idx ON expected_orders (next_query_at) WHERE next_query_at IS NOT NULL;
CREATE INDEX expected_orders_pay_order_idx ON expected_orders (pay_order_id) WHERE pay_order_id IS NOT NULL;
CREATE INDEX expected_orders_created_idx ON expected_orders (created_at);
CREATE INDEX expected_orders_gave_up_idx ON expected_orders (gave_up_at) WHERE gave_up_at IS NOT NULL;

-- Refunds parked without their original pay: the sweep asks the gateway for the original.
-- One row per original pay order id (several refunds may wait on the same pay).
CREATE TABLE parked_queries (
    original_order_id text PRIMARY KEY CHECK (original_order_id <> ''),
    mch_id            text NOT NULL CHECK (mch_id <> ''),
    family            text NOT NULL CHECK (family IN ('v3', 'v1')),
    first_parked_at   timestamptz NOT NULL,
    next_query_at     timestamptz,
    query_count       integer NOT NULL DEFAULT 0 CHECK (query_count >= 0),
    last_queried_at   timestamptz,
    last_status       integer,
    last_error        text,
    resolved_at       timestamptz,
    gave_up_at        timestamptz,
    CHECK (next_query_at IS NULL OR (resolved_at IS NULL AND gave_up_at IS NULL))
);
CREATE INDEX parked_queries_due_idx ON parked_queries (next_query_at) WHERE next_query_at IS NOT NULL;

-- One row per sweep pass: what it did, for the clock, the demo and whoever asks "is it running?".
CREATE TABLE sweep_runs (
    id           bigserial PRIMARY KEY,
    swept_at     timestamptz NOT NULL,              -- the pass's `now` (injectable in tests)
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    concurrency  integer NOT NULL CHECK (concurrency > 0),
    counts       jsonb NOT NULL DEFAULT '{}'
);
