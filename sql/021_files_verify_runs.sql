-- Every run of `files verify` (the clock's nightly one, `iotledger files verify`, the console's
-- "verify now"), with its report: the console's overview shows the last one without hashing a
-- day's files on every page view, and finance can see when the series was last proven.
CREATE TABLE files_verify_runs (
    id             bigserial PRIMARY KEY,
    ran_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    source         text NOT NULL CHECK (source IN ('clock', 'cli', 'console')),
    ran_by         text,  -- the console user who asked for it
    out_dir        text NOT NULL,
    ok             boolean NOT NULL,
    closed_days    integer NOT NULL CHECK (closed_days >= 0),
    first_day      date,
    last_day       date,
    files_checked  integer NOT NULL CHECK (files_checked >= 0),
    findings_count integer NOT NULL CHECK (findings_count >= 0),
    report         jsonb NOT NULL,
    CHECK (ok = (findings_count = 0))
);
