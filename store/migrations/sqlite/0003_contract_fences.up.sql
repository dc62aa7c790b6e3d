-- Versions a rollout's contract step fenced off: traffic back to them is
-- refused unless forced (the old version may not work on the new schema).
CREATE TABLE contract_fences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pool TEXT NOT NULL,
    version TEXT NOT NULL,
    reason TEXT NOT NULL,
    rollout_id BIGINT,
    created_at TEXT NOT NULL
);
