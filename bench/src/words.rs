//! Vocabulary for generated requests, and a small seeded random source (the same seed
//! gives the same store, so figures from two runs are comparable).

/// splitmix64: tiny, fast, and good enough to vary test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn pick(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

/// (name, kind) of the generated backends, in order.
pub const BACKENDS: &[(&str, &str)] = &[
    ("prod-db", "hoop"),
    ("deploys", "countersign"),
    ("github", "github"),
    ("flows", "prefect"),
    ("agents", "exec"),
    ("airflow", "airflow"),
    ("staging", "countersign"),
];

pub const KINDS: &[&str] = &[
    "db_session",
    "command",
    "deployment",
    "flow_run",
    "hitl_step",
    "agent_tool_call",
];

pub const PEOPLE: &[&str] = &[
    "ana",
    "bruno",
    "chen",
    "dana",
    "emeka",
    "farah",
    "goran",
    "hana",
    "ivan",
    "jun",
    "kofi",
    "lena",
    "mateo",
    "nadia",
    "omar",
    "priya",
    "quinn",
    "rosa",
    "sven",
    "tara",
    "umar",
    "vera",
    "wei",
    "ximena",
    "yusuf",
    "zoe",
    "ci-bot",
    "deploy-bot",
    "agent-7",
    "agent-12",
];

pub const VERBS: &[&str] = &[
    "Deploy",
    "Restart",
    "Roll back",
    "Scale",
    "Migrate",
    "Rotate secrets of",
    "Open a shell on",
    "Run query on",
    "Drain",
    "Promote canary of",
    "Backfill",
    "Delete stale rows in",
];

pub const SERVICES: &[&str] = &[
    "orders-db",
    "payments-api",
    "billing-worker",
    "search-indexer",
    "auth-gateway",
    "ledger",
    "inventory",
    "notifications",
    "checkout-web",
    "fraud-model",
    "analytics-etl",
    "cdn-edge",
    "kafka-cluster",
    "redis-cache",
    "user-profile",
    "shipping",
    "tax-engine",
    "reporting",
    "ml-feature-store",
    "support-portal",
];

pub const ENVS: &[&str] = &["prod", "staging", "eu-west", "us-east", "dr-site"];

pub const POLICIES: &[&str] = &[
    "prod-writes",
    "schema-change",
    "break-glass",
    "deploy-window",
    "agent-tools",
];

pub const HOSTS: &[&str] = &["laptop-ana", "workstation-7", "desk-42", "mbp-oncall"];

/// Common words for summaries, reasons and comments.
pub const WORDS: &[&str] = &[
    "canary",
    "rollback",
    "hotfix",
    "migration",
    "index",
    "latency",
    "incident",
    "customer",
    "refund",
    "backlog",
    "replica",
    "failover",
    "schema",
    "column",
    "vacuum",
    "quota",
    "timeout",
    "retry",
    "throttle",
    "cache",
    "warmup",
    "release",
    "version",
    "patch",
    "feature",
    "flag",
    "cleanup",
    "audit",
    "compliance",
    "ticket",
    "oncall",
    "pager",
    "weekend",
    "maintenance",
    "window",
    "approved",
    "urgent",
    "routine",
    "checked",
    "reviewed",
    "tested",
    "staging",
    "verified",
    "dashboard",
    "metrics",
    "alert",
    "budget",
    "capacity",
    "storage",
    "cluster",
    "network",
    "firewall",
    "certificate",
    "expiry",
    "token",
    "backup",
    "restore",
    "snapshot",
    "partition",
    "shard",
    "queue",
    "consumer",
    "producer",
    "deadlock",
    "lock",
    "table",
    "query",
    "plan",
    "memory",
    "leak",
    "cpu",
    "spike",
    "traffic",
    "holiday",
    "promo",
    "launch",
    "beta",
    "experiment",
    "model",
    "training",
    "pipeline",
    "nightly",
    "batch",
    "export",
    "import",
    "sync",
    "drift",
    "config",
    "terraform",
    "helm",
    "chart",
    "image",
    "registry",
    "kernel",
    "upgrade",
    "downgrade",
    "safe",
    "risky",
    "reversible",
    "manual",
];

/// `n` common words joined by spaces.
pub fn sentence(r: &mut Rng, n: usize) -> String {
    let mut s = String::with_capacity(n * 9);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[r.pick(WORDS.len())]);
    }
    s
}
