// Waiting for conditions without timing assertions: PATIENCE only turns a
// hang into a failure that says what never happened.

export const PATIENCE_MS = 20_000;

/**
 * Poll `predicate` (sync or async) until it returns a truthy value.
 * @template T
 * @param {() => T | Promise<T>} predicate
 * @param {string} what described in the failure
 * @param {number} [patienceMs]
 * @returns {Promise<T>}
 */
export async function until(predicate, what, patienceMs = PATIENCE_MS) {
  const deadline = Date.now() + patienceMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
