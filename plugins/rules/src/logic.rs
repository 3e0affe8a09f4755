//! The fraud rules themselves, free of any WIT or wasm types, so the very same source is
//! compiled into the sandboxed tier and, natively, into the benchmark's baseline.

/// Thresholds and weights of the rules (every one is a tier param).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleParams {
    /// Amount above which `high_amount` fires.
    pub high_amount: f64,
    /// Account age (days) below which `new_account` fires.
    pub new_account_days: f64,
    /// Comma-separated high-risk merchant categories.
    pub high_risk_categories: String,
    /// Score added by each rule, in the order of [`RULES`].
    pub weights: [f64; 4],
    /// Score from which the label is `review`.
    pub review_at: f64,
    /// Score from which the label is `block`.
    pub block_at: f64,
}

/// Rule names, in evaluation order.
pub const RULES: [&str; 4] = [
    "high_amount",
    "new_account",
    "high_risk_category",
    "unusual_international",
];

impl Default for RuleParams {
    fn default() -> Self {
        Self {
            high_amount: 5000.0,
            new_account_days: 7.0,
            high_risk_categories: "gambling,crypto,wire_transfer".into(),
            weights: [0.30, 0.25, 0.20, 0.15],
            review_at: 0.30,
            block_at: 0.60,
        }
    }
}

/// The features the rules read.
#[derive(Debug, Clone, Default)]
pub struct Transaction<'a> {
    /// Transaction amount (required).
    pub amount: f64,
    /// Age of the paying account; unknown is treated as brand new.
    pub account_age_days: Option<f64>,
    /// Merchant category.
    pub merchant_category: Option<&'a str>,
    /// Whether the transaction is international.
    pub is_international: bool,
    /// Whether the account has international history.
    pub has_international_history: bool,
}

/// The rules' verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `allow`, `review` or `block`.
    pub label: &'static str,
    /// Risk score in [0, 1].
    pub score: f64,
    /// Names of the rules that fired.
    pub reasons: Vec<String>,
}

/// Applies the rules. When unsure, err on the side that causes less damage: an unknown
/// account age counts as a new account.
pub fn evaluate(tx: &Transaction<'_>, params: &RuleParams) -> Verdict {
    let fired = [
        tx.amount > params.high_amount,
        tx.account_age_days.unwrap_or(0.0) < params.new_account_days,
        tx.merchant_category.is_some_and(|c| {
            params
                .high_risk_categories
                .split(',')
                .any(|r| r.trim() == c)
        }),
        tx.is_international && !tx.has_international_history,
    ];
    let mut score = 0.0;
    let mut reasons = Vec::new();
    for ((fired, weight), name) in fired.iter().zip(params.weights).zip(RULES) {
        if *fired {
            score += weight;
            reasons.push(name.to_string());
        }
    }
    let score = f64::clamp(score, 0.0, 1.0);
    let label = if score >= params.block_at {
        "block"
    } else if score >= params.review_at {
        "review"
    } else {
        "allow"
    };
    Verdict {
        label,
        score,
        reasons,
    }
}
