"""{{name}}: a {{kind_doc}} tier. `amount` above the `limit` param goes to review."""
import tierhost_tier as t


class WitWorld(t.Tier):
    def describe(self):
        return t.description("{{name}}", "0.1.0", t.Kind.{{kind_python}})

    def predict(self, req):
        amount = t.Features(req).require_number("amount")  # absent: missing-feature
        limit = t.Params().number_or("limit", 1000.0)  # [tier.params] limit
        label = "review" if amount > limit else "allow"
        return t.answer(label, 0.9, reasons=["amount-vs-limit"])
