// The fraud rules of plugins/rules (src/logic.rs) as a JavaScript tier: same params, same
// defaults, same answers, float for float. Build: ./scripts/polyglot.sh (componentize-js).
import { Features, Params, answer } from './tierhost_tier.js';

const RULES = ['high_amount', 'new_account', 'high_risk_category', 'unusual_international'];
const DEFAULT_WEIGHTS = [0.30, 0.25, 0.20, 0.15];

export function describe() {
  return { name: 'fraud-rules-js', version: '0.1.0', kind: 'rules' };
}

export function predict(req) {
  const p = new Params();
  const weights = RULES.map((name, i) => p.numberOr(`weights.${name}`, DEFAULT_WEIGHTS[i]));
  const highAmount = p.numberOr('high_amount', 5000.0);
  const newAccountDays = p.numberOr('new_account_days', 7.0);
  const categories = p.textOr('high_risk_categories', 'gambling,crypto,wire_transfer');
  const reviewAt = p.numberOr('review_at', 0.30);
  const blockAt = p.numberOr('block_at', 0.60);
  const confidence = p.numberOr('confidence', 0.4);

  const f = new Features(req);
  const amount = f.requireNumber('amount');
  const age = f.number('account_age_days');
  const category = f.text('merchant_category');
  const international = f.flag('is_international') ?? false;
  const history = f.flag('has_international_history') ?? false;

  const fired = [
    amount > highAmount,
    (age === null ? 0.0 : age) < newAccountDays,
    category !== null && categories.split(',').some((c) => c.trim() === category),
    international && !history,
  ];
  let score = 0.0;
  const reasons = [];
  fired.forEach((hit, i) => {
    if (hit) {
      score += weights[i];
      reasons.push(RULES[i]);
    }
  });
  score = Math.min(Math.max(score, 0.0), 1.0);
  const label = score >= blockAt ? 'block' : score >= reviewAt ? 'review' : 'allow';
  return answer(label, confidence, { score, reasons });
}
