"""The fraud rules of plugins/rules (src/logic.rs) as a Python tier: same params, same
defaults, same answers, float for float. Build: ./scripts/polyglot.sh (componentize-py)."""
import tierhost_tier as t

RULES = ("high_amount", "new_account", "high_risk_category", "unusual_international")
DEFAULT_WEIGHTS = (0.30, 0.25, 0.20, 0.15)


class WitWorld(t.Tier):
    def describe(self):
        return t.description("fraud-rules-py", "0.1.0", t.Kind.RULES)

    def predict(self, req):
        p = t.Params()
        weights = [p.number_or(f"weights.{name}", w) for name, w in zip(RULES, DEFAULT_WEIGHTS)]
        high_amount = p.number_or("high_amount", 5000.0)
        new_account_days = p.number_or("new_account_days", 7.0)
        categories = p.text_or("high_risk_categories", "gambling,crypto,wire_transfer")
        review_at = p.number_or("review_at", 0.30)
        block_at = p.number_or("block_at", 0.60)
        confidence = p.number_or("confidence", 0.4)

        f = t.Features(req)
        amount = f.require_number("amount")
        age = f.number("account_age_days")
        category = f.text("merchant_category")
        international = f.flag("is_international") or False
        history = f.flag("has_international_history") or False

        fired = (
            amount > high_amount,
            (0.0 if age is None else age) < new_account_days,
            category is not None and any(c.strip() == category for c in categories.split(",")),
            international and not history,
        )
        score = 0.0
        reasons = []
        for hit, weight, name in zip(fired, weights, RULES):
            if hit:
                score += weight
                reasons.append(name)
        score = min(max(score, 0.0), 1.0)
        if score >= block_at:
            label = "block"
        elif score >= review_at:
            label = "review"
        else:
            label = "allow"
        return t.answer(label, confidence, score=score, reasons=reasons)
