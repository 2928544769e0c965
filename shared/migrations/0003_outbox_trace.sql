-- The trace context of the change's cause, so that the sweeper's publish joins its trace.
ALTER TABLE presence_outbox ADD COLUMN traceparent text;
