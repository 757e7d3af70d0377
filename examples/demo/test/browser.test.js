// The demo in a real headless Chromium against the real pusher: a job's
// result shows up once, also when its WebSocket is cut or the pusher is
// killed and restarted while the job runs.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { sleep, until } from '../../../clients/js/test/helpers/wait.js';
import { startStack, submitJob } from './harness.js';

describe('demo page in Chromium', () => {
  /** @type {Awaited<ReturnType<typeof startStack>>} */
  let stack;
  before(async () => {
    stack = await startStack();
  });
  after(() => stack?.stop());

  /**
   * The pushes of `event` for job `id` that the page logged, once no more
   * arrive for a moment (room for a duplicate to show up).
   * @param {import('playwright-core').Page} page
   */
  async function pushesOf(page, event, id) {
    await sleep(500);
    return page.locator(`#pushes li[data-event="${event}"][data-job="${id}"]`).count();
  }

  /** Every push the page logged has a distinct message id. */
  async function assertNoDuplicates(page) {
    const ids = await page.locator('#pushes li[data-id]').evaluateAll((items) => items.map((li) => li.dataset.id));
    assert.equal(new Set(ids).size, ids.length, `duplicate pushes: ${ids}`);
  }

  /** The job as the demo back-end has it. */
  async function backendJob(page, id) {
    const jobs = await page.evaluate(async () => (await fetch('/api/jobs')).json());
    return jobs.find((job) => job.id === id);
  }

  test('a submitted job shows its result, pushed once', async () => {
    const page = await stack.openDemo();
    try {
      const job = await submitJob(page, { n: 100000, seconds: 0 });
      const row = page.locator(`#jobs tr[data-job="${job.id}"][data-status="done"]`);
      await row.waitFor();
      assert.match(await row.innerText(), /9592 primes up to 100000/);
      assert.equal(await pushesOf(page, 'job.done', job.id), 1);
      await assertNoDuplicates(page);
    } finally {
      await page.close();
    }
  });

  test('the WebSocket cut mid-job: the result published meanwhile arrives once', async () => {
    const page = await stack.openDemo();
    try {
      const job = await submitJob(page, { n: 200000, seconds: 2 });
      await page.locator(`#jobs tr[data-job="${job.id}"][data-status="running"]`).waitFor();

      stack.proxy.blockWebSockets(true);
      assert.ok(stack.proxy.dropWebSockets() >= 1);
      await page.locator('#connection[data-state="reconnecting"]').waitFor();
      // The worker finishes and publishes while the page cannot connect.
      await until(async () => (await backendJob(page, job.id))?.status === 'done', 'the job to finish');
      assert.equal(await page.locator(`#jobs tr[data-job="${job.id}"]`).getAttribute('data-status'), 'running');

      stack.proxy.blockWebSockets(false);
      const row = page.locator(`#jobs tr[data-job="${job.id}"][data-status="done"]`);
      await row.waitFor({ timeout: 30_000 });
      await page.locator('#connection[data-state="connected"]').waitFor();
      assert.match(await row.innerText(), /17984 primes up to 200000/);
      assert.equal(await pushesOf(page, 'job.done', job.id), 1);
      assert.equal(await pushesOf(page, 'job.started', job.id), 1);
      await assertNoDuplicates(page);
    } finally {
      stack.proxy.blockWebSockets(false);
      await page.close();
    }
  });

  test('the pusher killed and restarted mid-job: new token, result arrives once', async () => {
    const page = await stack.openDemo();
    try {
      const job = await submitJob(page, { kind: 'fibonacci', n: 90, seconds: 2 });
      await page.locator(`#jobs tr[data-job="${job.id}"][data-status="running"]`).waitFor();

      await stack.killHost();
      await page.locator('#connection:not([data-state="connected"])').waitFor();
      await stack.startNewHost();

      const row = page.locator(`#jobs tr[data-job="${job.id}"][data-status="done"]`);
      await row.waitFor({ timeout: 30_000 });
      assert.match(await row.innerText(), /F\(90\) = 2880067194370816120/);
      // The push itself, not just the reload, reached the page, once.
      await until(async () => (await page.locator(`#pushes li[data-event="job.done"][data-job="${job.id}"]`).count()) > 0,
        'the pushed result');
      assert.equal(await pushesOf(page, 'job.done', job.id), 1);
      await page.locator('#connection[data-state="connected"]').waitFor();
      // History lived in the killed process: the page was told, and reloaded.
      assert.equal(await page.locator('#pushes li.gap').count(), 1);
      await assertNoDuplicates(page);
    } finally {
      await page.close();
    }
  });
});
