// Takes the README's screenshot of the demo page with everything real (the
// pusher, the demo back-end, Chromium):
//   npm run screenshot --prefix examples/demo     (writes docs/demo.png)

import { resolve } from 'node:path';

import { startStack, submitJob } from './test/harness.js';

const output = resolve(process.argv[2] || 'demo.png');
const stack = await startStack();
try {
  const page = await stack.openDemo();
  const quick = await submitJob(page, { kind: 'fibonacci', n: 300, seconds: 0.5 });
  const primes = await submitJob(page, { n: 5_000_000, seconds: 1 });
  const slow = await submitJob(page, { n: 10_000_000, seconds: 30 });
  for (const job of [quick, primes]) await page.locator(`tr[data-job="${job.id}"][data-status="done"]`).waitFor();
  await page.locator(`tr[data-job="${slow.id}"][data-status="running"]`).waitFor();
  await submitJob(page, { kind: 'fibonacci', n: 50, seconds: 1 }); // queued behind the slow one
  await page.screenshot({ path: output, fullPage: true });
  console.log(`wrote ${output}`);
} finally {
  await stack.stop();
}
