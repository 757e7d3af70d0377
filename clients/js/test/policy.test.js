import assert from 'node:assert/strict';
import test from 'node:test';

import {
  DEFAULT_BACKOFF,
  chooseStep,
  closeAction,
  edgeMargin,
  idAfter,
  jittered,
  maxId,
  reconnectDelay,
} from '../src/policy.js';

test('close codes map to what the protocol asks of a client', () => {
  const expected = {
    4001: 'token', 4004: 'token', 4010: 'token', 4099: 'token', 4009: 'stop',
    4002: 'clock', 4003: 'code', 4005: 'position',
    4100: 'locked', 4101: 'backoff', 4102: 'backoff', 4199: 'backoff',
    4200: 'now', 4201: 'now', 4202: 'now', 4299: 'now',
    1006: 'short', 1005: 'short', 1000: 'short', 1001: 'short',
    1011: 'backoff', 1009: 'backoff', 4300: 'backoff',
  };
  for (const [code, action] of Object.entries(expected)) {
    assert.equal(closeAction(Number(code)), action, `close code ${code}`);
  }
});

test('back-off grows, is capped, and keeps half of it fixed (equal jitter)', () => {
  const low = () => 0;
  const high = () => 0.999999;
  assert.equal(jittered(0, 1000, 30000, low), 500);
  assert.equal(jittered(0, 1000, 30000, high), 1000);
  assert.equal(jittered(3, 1000, 30000, low), 4000);
  assert.equal(jittered(10, 1000, 30000, high), 30000);
  assert.equal(jittered(1000, 1000, 30000, low), 15000);
});

test('reconnect delays by action', () => {
  const b = DEFAULT_BACKOFF;
  const mid = () => 0.5;
  // 4200-4299: at once (a little spread), then like a lost connection.
  assert.ok(reconnectDelay('now', 0, b, mid) <= b.nowJitterMs);
  assert.equal(reconnectDelay('now', 1, b, mid), jittered(0, b.shortMs, b.shortMaxMs, mid));
  // 1006: short back-off, capped low.
  assert.equal(reconnectDelay('short', 0, b, () => 0), b.shortMs / 2);
  assert.ok(reconnectDelay('short', 20, b, mid) <= b.shortMaxMs);
  // 4100-4199: a longer back-off (4100 too, when there is no new token).
  assert.equal(reconnectDelay('backoff', 0, b, () => 0), b.baseMs / 2);
  assert.equal(reconnectDelay('locked', 0, b, () => 0), b.baseMs / 2);
  assert.ok(reconnectDelay('backoff', 20, b, mid) <= b.maxMs);
  assert.ok(reconnectDelay('backoff', 20, b, mid) > b.shortMaxMs);
  // A new token at once, then backing off if refreshes keep failing.
  assert.equal(reconnectDelay('token', 0, b, mid), 0);
  assert.ok(reconnectDelay('token', 3, b, mid) >= b.baseMs);
  // 4003: no wait; chooseStep decides.
  assert.equal(reconnectDelay('code', 5, b, mid), 0);
});

test('a code is chosen from the current step, then the previous, then the next', () => {
  const period = 30;
  const margin = edgeMargin(period);
  assert.equal(margin, 5000);
  const step = 1000;
  const middle = step * 30_000 + 15_000;
  assert.deepEqual(chooseStep(middle, period, new Set(), margin), { step });
  assert.deepEqual(chooseStep(middle, period, new Set([step]), margin), { step: step - 1 });
  assert.deepEqual(chooseStep(middle, period, new Set([step, step - 1]), margin), { step: step + 1 });
  // All three spent: wait for the next step.
  assert.deepEqual(chooseStep(middle, period, new Set([step - 1, step, step + 1]), margin), { waitMs: 15_000 });
});

test('near a step edge a neighbour code is not risked', () => {
  const period = 30;
  const margin = edgeMargin(period);
  const step = 1000;
  const start = step * 30_000;
  // 2 s before the next step: the server may already be there, where the
  // previous step's code would be wrong, so use the next step's.
  assert.deepEqual(chooseStep(start + 28_000, period, new Set([step]), margin), { step: step + 1 });
  // 1 s into a step: the server may still be in the one before, where the
  // next step's code would be wrong; wait until the margin has passed.
  assert.deepEqual(chooseStep(start + 1_000, period, new Set([step, step - 1]), margin), { waitMs: 4_000 });
  assert.deepEqual(chooseStep(start + 5_000, period, new Set([step, step - 1]), margin), { step: step + 1 });
});

test('message ids compare as 64-bit numbers', () => {
  assert.ok(idAfter('10', '9'));
  assert.ok(!idAfter('9', '10'));
  assert.ok(idAfter('18446744073709551615', '18446744073709551614'));
  assert.ok(!idAfter('1764220800123456', '1764220800123456'));
  assert.equal(maxId(undefined, '5'), '5');
  assert.equal(maxId('12', '5'), '12');
  assert.equal(maxId(undefined, undefined), undefined);
});
