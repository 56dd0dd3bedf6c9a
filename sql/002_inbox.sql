-- The notify inbox: every notify the ingress acknowledged, stored before the `success` answer.
-- A row is the gateway's word we promised to keep: it is never deleted by the pipeline, and
-- its state says how far it got:
--   received  stored, but handing it to the queue failed (Redis down): redrive will
--   queued    stored and handed to the queue right after the answer (again on redrive)
--   done      processed by the ledger; `outcome` says what posting did (posted, duplicate, ...)
--   failed    permanent error (bad data, unknown merchant): not retried; `reason` names the field
--   dead      transient errors outlived the retries; `reason` holds the last error
-- Rows in received/queued older than the redrive age are queued again (Redis flushed, worker
-- killed, enqueue failed). `iotledger replay` puts failed/dead rows through again.

CREATE TABLE inbox (
    id              bigserial PRIMARY KEY,
    -- sha256 of the body exactly as it arrived: the same body again is recognised, not stored twice
    body_sha256     bytea NOT NULL CHECK (length(body_sha256) = 32),
    -- the raw body; when it carried a full card number, the number is masked here (pan_masked)
    body            bytea NOT NULL CHECK (length(body) > 0),
    pan_masked      boolean NOT NULL DEFAULT false,
    content_type    text,
    family          text NOT NULL CHECK (family IN ('v3', 'v1')),
    remote_addr     text,
    mch_id          text,
    pay_order_id    text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    -- when the ingress checked merchant and sign; a masked body can no longer be re-verified,
    -- so the worker relies on this check for those rows only
    verified_at     timestamptz,
    state           text NOT NULL DEFAULT 'received'
                    CHECK (state IN ('received', 'queued', 'done', 'failed', 'dead')),
    outcome         text CHECK (outcome IS NULL OR outcome IN (
                        'posted', 'duplicate', 'pending', 'failed', 'parked', 'rejected', 'conflict', 'unknown_status')),
    reason          text,
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    redrives        integer NOT NULL DEFAULT 0 CHECK (redrives >= 0),
    queued_at       timestamptz,
    processed_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inbox_body_once UNIQUE (body_sha256),
    CONSTRAINT inbox_masked_needs_verified CHECK (NOT pan_masked OR verified_at IS NOT NULL),
    CONSTRAINT inbox_done_has_outcome CHECK ((state = 'done') = (outcome IS NOT NULL)),
    CONSTRAINT inbox_failure_has_reason CHECK (state NOT IN ('failed', 'dead') OR reason IS NOT NULL)
);
COMMENT ON TABLE inbox IS 'every acknowledged IOTPay notify, durable before the success answer';

-- the redrive scan and the backlog gauge look only at rows not finished yet
CREATE INDEX inbox_unfinished_idx ON inbox (coalesce(queued_at, received_at)) WHERE state IN ('received', 'queued');
CREATE INDEX inbox_state_idx ON inbox (state, id);
CREATE INDEX inbox_pay_order_idx ON inbox (pay_order_id);
