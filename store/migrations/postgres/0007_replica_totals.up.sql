-- Each replica's running totals per pool since it started (requests,
-- errors, latency slots, each route's counts; encoded by sluice-routing's
-- `Totals`), so the leader's sequential tests count every request of
-- every replica since a change exactly once.
ALTER TABLE replica_windows ADD COLUMN totals TEXT NOT NULL DEFAULT '';
