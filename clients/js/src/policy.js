// Reconnect decisions, kept free of I/O and timers so they can be tested
// directly: what a close code asks for, how long to wait, which one-time
// code to spend next.

import { stepAt } from './totp.js';

/**
 * What to do after the socket closed with `code`:
 * - `stop`: the app ended this user's connections (4009 `terminated`): do
 *   not reconnect; the app decides when its user comes back.
 * - `token`: this connection string or token is no good (4000-4099 other
 *   than 4002/4003): get a new token from the app, if it can give one.
 * - `code`: the one-time code was already spent (4003): use another unused
 *   code of the window, or wait for the next step.
 * - `position`: the resume position was refused (4005 `invalid_last_id`):
 *   forget it and reconnect at once; `welcome` announces where to go on.
 * - `clock`: the code matched no accepted step (4002): the clocks disagree;
 *   try a fresh code at the next step, backing off.
 * - `locked`: the access id is locked after wrong codes (4100): anyone who
 *   has seen its connection string can keep it locked, so get a new token
 *   from the app if it can give one (a new access id is not locked);
 *   otherwise back off.
 * - `backoff`: the server is throttling or failing (4101-4199, 1011, others):
 *   wait longer each time.
 * - `now`: the server asked for a reconnect (4200-4299): at once.
 * - `short`: the connection was lost without a code (1006, the node died, or
 *   the connect failed): a short back-off.
 * @param {number} code WebSocket close code
 * @returns {'stop' | 'token' | 'position' | 'code' | 'clock' | 'locked' | 'backoff' | 'now' | 'short'}
 */
export function closeAction(code) {
  if (code === 4009) return 'stop';
  if (code === 4003) return 'code';
  if (code === 4002) return 'clock';
  if (code === 4005) return 'position';
  if (code >= 4000 && code <= 4099) return 'token';
  if (code === 4100) return 'locked';
  if (code >= 4100 && code <= 4199) return 'backoff';
  if (code >= 4200 && code <= 4299) return 'now';
  // 1000/1001: a clean close we did not ask for; 1005/1006: no code at all.
  if (code === 1000 || code === 1001 || code === 1005 || code === 1006) return 'short';
  return 'backoff';
}

/**
 * @typedef {object} BackoffOptions
 * @property {number} [shortMs] first delay after a lost connection (500)
 * @property {number} [shortMaxMs] cap for lost connections (5000)
 * @property {number} [baseMs] first delay when throttled or failing (1000)
 * @property {number} [maxMs] cap when throttled or failing (30000)
 * @property {number} [nowJitterMs] spread of "reconnect now" (250)
 */

/** @type {Required<BackoffOptions>} */
export const DEFAULT_BACKOFF = {
  shortMs: 500,
  shortMaxMs: 5000,
  baseMs: 1000,
  maxMs: 30000,
  nowJitterMs: 250,
};

/**
 * Exponential back-off with "equal jitter": half the delay is fixed, half is
 * random, so clients dropped together by one node spread out when they come
 * back, yet none retries at once.
 * @param {number} attempt failed attempts since the last welcome (0-based)
 * @param {number} firstMs
 * @param {number} maxMs
 * @param {() => number} random in [0, 1)
 * @returns {number} milliseconds
 */
export function jittered(attempt, firstMs, maxMs, random) {
  const ceiling = Math.min(maxMs, firstMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * How long to wait before the next attempt after a close.
 * @param {ReturnType<typeof closeAction>} action
 * @param {number} attempt failed attempts since the last welcome (0-based)
 * @param {Required<BackoffOptions>} options
 * @param {() => number} random
 * @returns {number} milliseconds
 */
export function reconnectDelay(action, attempt, options, random) {
  switch (action) {
    case 'code':
    case 'position':
      return 0; // chooseStep decides whether to wait for the next step
    case 'now':
      // A repeated "now" (the node went away and the next connect failed
      // too) turns into a short back-off.
      return attempt === 0
        ? Math.round(random() * options.nowJitterMs)
        : jittered(attempt - 1, options.shortMs, options.shortMaxMs, random);
    case 'short':
      return jittered(attempt, options.shortMs, options.shortMaxMs, random);
    case 'token':
      // The first new token at once; a refresh that keeps failing backs off.
      return attempt === 0 ? 0 : jittered(attempt - 1, options.baseMs, options.maxMs, random);
    default: // 'backoff', 'clock', 'locked' (without a new token)
      return jittered(attempt, options.baseMs, options.maxMs, random);
  }
}

/**
 * Which time step's code to spend on the next connect, or how long to wait.
 *
 * The server accepts the codes of steps T-1, T and T+1 and each at most once.
 * This client tries its current step first, then the previous one (useless
 * soon anyway), then the next one. A neighbour is only used when the clock is
 * at least `marginMs` away from the step edge on that side, so a small clock
 * difference cannot turn it into a wrong code (wrong codes count towards the
 * access id's lock-out). When all are spent, wait for the next step.
 * @param {number} nowMs client time, ms since the Unix epoch
 * @param {number} period step length in seconds
 * @param {Set<number>} used steps already spent (by this client, or found
 *   spent through 4003)
 * @param {number} marginMs
 * @returns {{ step: number } | { waitMs: number }}
 */
export function chooseStep(nowMs, period, used, marginMs) {
  const stepMs = period * 1000;
  const step = stepAt(nowMs, period);
  const into = nowMs - step * stepMs;
  if (!used.has(step)) return { step };
  if (!used.has(step - 1) && stepMs - into >= marginMs) return { step: step - 1 };
  if (!used.has(step + 1)) {
    if (into >= marginMs) return { step: step + 1 };
    return { waitMs: marginMs - into };
  }
  return { waitMs: stepMs - into };
}

/**
 * The safety margin around step edges for `period`.
 * @param {number} period seconds
 * @returns {number} milliseconds
 */
export function edgeMargin(period) {
  return Math.min(5000, (period * 1000) / 4);
}

/**
 * Compare two message ids (decimal strings of unsigned 64-bit numbers, no
 * leading zeros) without BigInt.
 * @param {string} a
 * @param {string} b
 * @returns {boolean} a > b
 */
export function idAfter(a, b) {
  return a.length !== b.length ? a.length > b.length : a > b;
}

/**
 * The larger of two ids, either of which may be missing.
 * @param {string | undefined} a
 * @param {string | undefined} b
 * @returns {string | undefined}
 */
export function maxId(a, b) {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return idAfter(a, b) ? a : b;
}
