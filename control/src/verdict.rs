//! What one judgement of a pool concluded: the guard's, a rollout
//! analysis's, a comparison's.

/// What one evaluation concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough requests in the window to judge.
    Insufficient {
        requests: u64,
    },
    Healthy,
    Breach {
        kind: BreachKind,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreachKind {
    ErrorRatio,
    Latency,
}

impl BreachKind {
    pub const ALL: [BreachKind; 2] = [BreachKind::ErrorRatio, BreachKind::Latency];

    pub fn label(self) -> &'static str {
        match self {
            BreachKind::ErrorRatio => "error_ratio",
            BreachKind::Latency => "latency",
        }
    }
}
