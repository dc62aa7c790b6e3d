-- Testers' match rules per pool (a header or cookie with an exact value
-- sends a request to the pool whatever the weights), stored with the pool
-- so every replica and a restart route them alike.
CREATE TABLE pool_matches (
    pool TEXT NOT NULL,
    position BIGINT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (pool, position)
);
