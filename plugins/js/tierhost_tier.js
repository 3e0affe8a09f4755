// Guest SDK for tierhost tiers written in JavaScript (built with componentize-js).
//
// The same helpers as the Rust SDK (plugins/sdk): typed, by-name access to a request's
// features and to the tier's params, answer/abstain constructors and typed errors, thrown
// (componentize-js maps a thrown value to the `err` of `predict`'s result). WIT `s64` values
// arrive as BigInt; `number()` turns them into numbers the way Rust's `as f64` does.
import { params as hostParams, model as hostModel, log as hostLog } from 'tierhost:tier/host@0.1.0';

export const invalidInput = (message) => ({ tag: 'invalid-input', val: message });
export const missingFeature = (name) => ({ tag: 'missing-feature', val: name });
export const badParams = (message) => ({ tag: 'bad-params', val: message });
export const internal = (message) => ({ tag: 'internal', val: message });

/** An answer the host may serve; the score defaults to the confidence. */
export function answer(label, confidence, { score = confidence, reasons = [] } = {}) {
  return { tag: 'answer', val: { label, score, confidence, reasons } };
}

/** Declines to answer, saying why: the host goes down one tier. */
export function abstain(why) {
  return { tag: 'abstain', val: why };
}

/** One log line through the host ('debug', 'info', 'warn', 'error'), bounded per call. */
export function log(level, message) {
  hostLog(level, message);
}

/** The read-only model document granted to this tier (empty when none). */
export function model() {
  return hostModel();
}

/** Typed, by-name access to a request's features. */
export class Features {
  constructor(req) {
    this.features = req.features;
  }

  /** The raw value of a feature (the first of that name), undefined when absent. */
  get(name) {
    const feature = this.features.find((f) => f.name === name);
    return feature === undefined ? undefined : feature.value;
  }

  /** A numeric feature (booleans count as 0/1); absent or null gives null. */
  number(name) {
    const v = this.get(name);
    if (v === undefined || v.tag === 'null') return null;
    if (v.tag === 'boolean') return v.val ? 1 : 0;
    if (v.tag === 'integer') return Number(v.val);
    if (v.tag === 'float') return v.val;
    throw invalidInput(`feature \`${name}\` must be a number, got text`);
  }

  /** A numeric feature that must be present (throws missing-feature). */
  requireNumber(name) {
    const n = this.number(name);
    if (n === null) throw missingFeature(name);
    return n;
  }

  /** A boolean feature (integers 0/1 accepted); absent or null gives null. */
  flag(name) {
    const v = this.get(name);
    if (v === undefined || v.tag === 'null') return null;
    if (v.tag === 'boolean') return v.val;
    if (v.tag === 'integer' && (v.val === 0n || v.val === 1n)) return v.val === 1n;
    throw invalidInput(`feature \`${name}\` must be a boolean`);
  }

  /** A text feature; absent or null gives null. */
  text(name) {
    const v = this.get(name);
    if (v === undefined || v.tag === 'null') return null;
    if (v.tag === 'text') return v.val;
    throw invalidInput(`feature \`${name}\` must be text`);
  }
}

/** The tier's params from its cascade entry (nested tables flattened with dots). */
export class Params {
  constructor() {
    this.params = hostParams();
  }

  get(name) {
    const p = this.params.find((q) => q.name === name);
    return p === undefined ? undefined : p.value;
  }

  numberOr(name, fallback) {
    const v = this.get(name);
    if (v === undefined) return fallback;
    if (v.tag === 'integer') return Number(v.val);
    if (v.tag === 'float') return v.val;
    throw badParams(`param \`${name}\` must be a number`);
  }

  textOr(name, fallback) {
    const v = this.get(name);
    if (v === undefined) return fallback;
    if (v.tag === 'text') return v.val;
    throw badParams(`param \`${name}\` must be text`);
  }
}
