// {{name}}: a {{kind_doc}} tier. `amount` above the `limit` param goes to review.
import { Features, Params, answer } from './tierhost_tier.js';

export function describe() {
  return { name: '{{name}}', version: '0.1.0', kind: '{{kind_wit}}' };
}

export function predict(req) {
  const amount = new Features(req).requireNumber('amount'); // absent: missing-feature
  const limit = new Params().numberOr('limit', 1000.0); // [tier.params] limit
  return answer(amount > limit ? 'review' : 'allow', 0.9, { reasons: ['amount-vs-limit'] });
}
