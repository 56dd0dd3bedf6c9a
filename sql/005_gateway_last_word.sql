-- The gateway may change its mind (issue: the ledger follows the gateway's last word).
--   * status_regression: a final order's status moved backwards (posted/rejected/failed reported
--     failed or pending later); the ledger does not change by itself, the exception is alerted;
--   * content_changed: an order with nothing posted got other content (a tip on a pending POS
--     order); the newer content replaced the recorded one, the exception keeps both;
--   * notify_not_posted: an acknowledged notify whose inbox row failed or died and whose order is
--     not posted: reconcile lists it with its reason, so nothing acknowledged goes unreported.

ALTER TABLE ledger_exceptions DROP CONSTRAINT ledger_exceptions_kind_check;
ALTER TABLE ledger_exceptions ADD CONSTRAINT ledger_exceptions_kind_check CHECK (kind IN (
    'conflict', 'over_refund', 'currency_mismatch', 'merchant_mismatch', 'non_positive_amount',
    'refundable_mismatch', 'unknown_status', 'void_not_full', 'parked_too_long',
    'status_regression', 'content_changed'));

ALTER TABLE inbox DROP CONSTRAINT inbox_outcome_check;
ALTER TABLE inbox ADD CONSTRAINT inbox_outcome_check CHECK (outcome IS NULL OR outcome IN (
    'posted', 'duplicate', 'pending', 'failed', 'parked', 'rejected', 'conflict', 'unknown_status',
    'status_regression'));

INSERT INTO mismatch_classes (class, description) VALUES
    ('status_regression', 'the gateway moved a final order''s status backwards (e.g. a posted pay reported failed); the ledger is unchanged: decide and correct by hand'),
    ('content_changed', 'the gateway changed an order''s amount or other content before it was posted; the newer content was posted'),
    ('notify_not_posted', 'a notify IOTPay was told we accepted failed processing and its order is not posted (see the reason)');

-- reconcile finds failed and dead inbox rows by state and time
CREATE INDEX inbox_failed_idx ON inbox (updated_at) WHERE state IN ('failed', 'dead');
-- the minute alert job raises the recent status_regressions of posted and rejected orders at once
CREATE INDEX ledger_exceptions_regression_idx ON ledger_exceptions (created_at) WHERE kind = 'status_regression';

-- What a stored notify body says, for reports on rows the worker could not post: its amount and
-- currency from V3 JSON or v1 form fields; NULL where the body does not say (never an error).
CREATE FUNCTION inbox_fact(body bytea, field text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    text_body text;
BEGIN
    text_body := convert_from(body, 'UTF8');
    IF left(ltrim(text_body), 1) = '{' THEN
        RETURN (text_body::jsonb) ->> field;
    END IF;
    RETURN substring(text_body FROM '(?:^|&)' || field || '=([^&]*)');
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
