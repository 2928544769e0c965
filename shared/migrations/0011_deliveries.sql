-- Deliveries of meeting reports to the platform's endpoints (`worker deliver`).

-- Every attempt to deliver a report to an endpoint, whatever its outcome: what an operator
-- reads to see why an endpoint fails. Kept for DELIVERY_ATTEMPTS_MAX_AGE (the oldest deleted
-- first, by `worker deliver` itself).
CREATE TABLE delivery_attempts (
    id           bigserial PRIMARY KEY,
    endpoint     text NOT NULL,
    report_id    text NOT NULL,
    -- JetStream's delivery count of the report for this endpoint (1 for the first attempt).
    attempt      integer NOT NULL,
    -- The HTTP status of the answer; NULL when there was none (timeout, refused, unreachable).
    status       smallint,
    latency_ms   integer NOT NULL,
    error        text,
    attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_attempts_by_report ON delivery_attempts (endpoint, report_id);
CREATE INDEX delivery_attempts_by_time ON delivery_attempts (attempted_at);

-- Endpoints that answered 410 Gone: nothing more is delivered to them at that URL until an
-- operator enables them again (`worker deliver enable NAME`), or their URL changes.
CREATE TABLE delivery_endpoints_disabled (
    endpoint    text PRIMARY KEY,
    url         text NOT NULL,
    status      smallint NOT NULL,
    reason      text NOT NULL,
    disabled_at timestamptz NOT NULL DEFAULT now()
);
