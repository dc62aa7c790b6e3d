-- Routing state: one row per pool, one per backend, and the generation.
CREATE TABLE routing_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    weight INTEGER NOT NULL CHECK (weight BETWEEN 0 AND 100),
    protocol TEXT NOT NULL,
    position INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE pool_backends (
    pool TEXT NOT NULL REFERENCES pools (name) ON DELETE CASCADE,
    addr TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (pool, addr)
);

-- Rollouts: the spec as JSON, where the state machine stands, and how it ended.
CREATE TABLE rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    current_step INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT,
    reason TEXT
);
CREATE INDEX rollouts_started_at ON rollouts (started_at);

-- Deployment history: which version ran in which pool, from when to when.
CREATE TABLE deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pool TEXT NOT NULL,
    from_version TEXT,
    to_version TEXT NOT NULL,
    rollout_id INTEGER REFERENCES rollouts (id),
    started_at TEXT NOT NULL,
    finished_at TEXT,
    result TEXT NOT NULL
);
CREATE INDEX deployments_pool_started ON deployments (pool, started_at);

-- Audit trail: every change, who made it, what it was before and after.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT,
    result TEXT NOT NULL,
    request_id TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor_at ON audit_log (actor, at);
CREATE INDEX audit_log_action_at ON audit_log (action, at);
