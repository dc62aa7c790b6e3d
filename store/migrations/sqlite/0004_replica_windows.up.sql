-- Each replica's live window per pool, refreshed every second, so the
-- leader judges a rollout or a rollback on all the traffic.
CREATE TABLE replica_windows (
    replica TEXT NOT NULL,
    pool TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    upstream_failures BIGINT NOT NULL,
    latency TEXT NOT NULL,
    PRIMARY KEY (replica, pool)
);
